"""Canonical URLs of the project's own artifacts: one base, documented in terminology/README.md; and the order of
a canonical resource's versions.

Changing BASE changes the identity of every Questionnaire, CodeSystem and ValueSet the project publishes, so it
never changes once sites use them.
"""

from __future__ import annotations

BASE = "http://fit-fhir.org/fhir"
MEASURES_CODESYSTEM = f"{BASE}/CodeSystem/fit-measures"
FLAGS_CODESYSTEM = f"{BASE}/CodeSystem/fit-flags"
# meta.security of a clinician's own impression (their rating of a session, its gap with the client's, the Flag
# it raises): kept from patient-context tokens unless the site allows (auth/access.py)
SECURITY_CODESYSTEM = f"{BASE}/CodeSystem/fit-security"
CLINICIAN_ONLY = "clinician-only"
# Tags on what the write-back sends: ``Type/id`` codes key a resource without an identifier (Provenance);
# SCORED_AT_SOURCE marks a QuestionnaireResponse whose Observations and Flags travel with it, so a receiving
# server that scores responses (another instance of this one) does not score it twice.
WRITE_BACK_TAG = f"{BASE}/write-back"
SCORED_AT_SOURCE = "scored-at-source"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Order versions numerically where they are numbers (1.10.0 after 1.9.0): a canonical without a version
    means the newest."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in version.replace("-", ".").split("."))
