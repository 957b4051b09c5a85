"""Canonical URLs of the project's own artifacts: one base, documented in terminology/README.md.

Changing BASE changes the identity of every Questionnaire, CodeSystem and ValueSet the project publishes, so it
never changes once sites use them.
"""

BASE = "http://fit-fhir.org/fhir"
MEASURES_CODESYSTEM = f"{BASE}/CodeSystem/fit-measures"
FLAGS_CODESYSTEM = f"{BASE}/CodeSystem/fit-flags"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
