"""The scopes the app asks an EHR for (SMART App Launch 2.x §Scopes; issue 7 point 1: "requests the scopes the EHR
supports (v2 or v1 syntax, from its discovery document)"): the registration's scopes in v2 when the EHR announces
permission-v2, translated to v1 otherwise, with the launch scope for the kind of launch and the identity scopes
the EHR lists."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from fhir_server.ehr.registry import EhrRegistration
from fhir_server.smart.launch import launch_scope, pkce_pair

EHR = EhrRegistration(
    id=1,
    issuer="https://ehr.example/fhir",
    name="EHR",
    client_id="app",
    auth_method="none",
    client_secret=None,
    scope="launch patient/QuestionnaireResponse.cru patient/Observation.cru patient/Patient.rs",
    resource_types=("QuestionnaireResponse", "Observation"),
    backend_client_id=None,
    max_requests_per_second=None,
    created_at=datetime.now(UTC),
)


def test_v2_ehr_gets_v2_scopes():
    scope = launch_scope(EHR, {"capabilities": ["permission-v2"]}, ehr_launch=True, view="form").split()
    assert "patient/Observation.cru" in scope and "launch" in scope
    assert "launch/patient" not in scope and "openid" in scope and "fhirUser" in scope


def test_v1_ehr_gets_read_and_write():
    scope = launch_scope(EHR, {"capabilities": ["permission-v1"]}, ehr_launch=False, view="form").split()
    assert {"patient/Observation.read", "patient/Observation.write", "patient/Patient.read"} <= set(scope)
    assert "patient/Patient.write" not in scope  # .rs asks for no write
    assert not any(s.endswith((".cru", ".rs")) for s in scope)
    assert "launch/patient" in scope and "launch" not in scope  # standalone


def test_identity_scopes_only_when_supported_and_clinician_view_reads_flags():
    scope = launch_scope(
        EHR, {"capabilities": ["permission-v2"], "scopes_supported": ["launch", "openid"]}, ehr_launch=True,
        view="clinician",
    ).split()  # fmt: skip
    assert "openid" in scope and "fhirUser" not in scope
    assert "patient/Flag.rs" in scope


def test_the_supervision_page_asks_for_reports_and_no_patient():
    """A user's read of MeasureReports, the registration's online_access (so the page can refresh its token), the
    launch scope of an EHR launch and the identity scopes; none of the registration's patient/ scopes."""
    ehr = replace(EHR, scope=f"{EHR.scope} online_access")
    v2 = launch_scope(ehr, {"capabilities": ["permission-v2"]}, ehr_launch=True, view="supervision").split()
    assert v2 == ["launch", "online_access", "user/MeasureReport.r", "openid", "fhirUser"]
    v1 = launch_scope(EHR, {"capabilities": ["permission-v1"]}, ehr_launch=False, view="supervision").split()
    assert v1 == ["user/MeasureReport.read", "openid", "fhirUser"]  # standalone: no launch, no launch/patient


def test_pkce_pair_is_s256():
    import base64
    import hashlib

    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == expected
