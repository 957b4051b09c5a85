"""Canonical URLs of the project's own artifacts: one base, documented in terminology/README.md.

Changing BASE changes the identity of every Questionnaire, CodeSystem and ValueSet the project publishes, so it
never changes once sites use them.
"""

BASE = "http://fit-fhir.org/fhir"
MEASURES_CODESYSTEM = f"{BASE}/CodeSystem/fit-measures"
FLAGS_CODESYSTEM = f"{BASE}/CodeSystem/fit-flags"
# Tags on what the write-back sends: ``Type/id`` codes key a resource without an identifier (Provenance);
# SCORED_AT_SOURCE marks a QuestionnaireResponse whose Observations and Flags travel with it, so a receiving
# server that scores responses (another instance of this one) does not score it twice.
WRITE_BACK_TAG = f"{BASE}/write-back"
SCORED_AT_SOURCE = "scored-at-source"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
