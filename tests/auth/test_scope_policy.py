"""Which requested scopes a client gets (SMART App Launch 2 "Scopes and Launch Context"): requested ∩ registered,
malformed scopes dropped, v1 and v2 spellings compared by permission, query constraints kept exact, and the launch
context narrowing patient/, user/ and system/ scopes."""

from __future__ import annotations

import pytest

from fhir_server.auth.scope_policy import for_backend, for_user_app, within_client

SURVEY = "patient/Observation.rs?category=survey"


@pytest.mark.parametrize(
    ("requested", "registered", "granted"),
    [
        ("patient/Observation.rs", "patient/*.cruds", ["patient/Observation.rs"]),
        ("patient/Observation.read", "patient/*.rs", ["patient/Observation.read"]),
        ("patient/Observation.write", "patient/*.rs", []),
        (SURVEY, "patient/Observation.rs", [SURVEY]),
        ("patient/Observation.rs", SURVEY, []),
        ("patient/Observation.rs?category=vital-signs", SURVEY, []),
        ("user/Patient.rs", "patient/*.rs", []),
        ("patient/Observation.sr patient/Nope.rs patient/*.x launch/other", "patient/*.cruds launch/other", []),
        ("openid fhirUser offline_access", "openid offline_access", ["openid", "offline_access"]),
        ("openid openid patient/*.rs", "openid patient/*.rs", ["openid", "patient/*.rs"]),
    ],
)
def test_within_client(requested, registered, granted):
    assert within_client(requested, registered) == granted


def test_user_app_needs_a_patient_for_patient_scopes_and_never_gets_system_scopes():
    scopes = ["openid", "launch", "launch/patient", "patient/*.rs", "user/*.rs", "system/*.rs"]
    standalone = for_user_app(scopes, patient=None, encounter=None, ehr_launch=False, user_is_patient=False)
    assert standalone == ["openid", "user/*.rs"]
    launched = for_user_app(scopes, patient="p1", encounter=None, ehr_launch=True, user_is_patient=False)
    assert launched == ["openid", "launch", "launch/patient", "patient/*.rs", "user/*.rs"]
    patient_user = for_user_app(scopes, patient="p1", encounter=None, ehr_launch=False, user_is_patient=True)
    assert patient_user == ["openid", "launch/patient", "patient/*.rs"]


def test_backend_gets_system_scopes_only():
    assert for_backend("system/*.rs patient/*.rs openid", "system/*.rs patient/*.rs openid") == ["system/*.rs"]
