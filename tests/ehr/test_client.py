"""The delivery rules that need no EHR: Retry-After in both forms (RFC 9110 §10.2.3), backoff with full jitter,
which answers are worth retrying, the Backend Services scope in the EHR's syntax (SMART App Launch 2.x
scopes), and the per-EHR rate limiter."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from fhir_server.auth.keys import KeyStore
from fhir_server.config import Settings
from fhir_server.ehr.client import MAX_RETRY_AFTER, DeliveryError, RateLimits, failure, parse_retry_after
from fhir_server.ehr.registry import EhrRegistration
from fhir_server.ehr.tokens import ASSERTION_TYPE, backend_scope, client_authentication
from fhir_server.ehr.worker import backoff
from fhir_server.store.engine import build_engine
from fhir_server.store.migrate import upgrade

NOW = datetime(2026, 11, 2, 10, 0, 0, tzinfo=UTC)


def test_retry_after_in_seconds_and_as_an_http_date():
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90.0
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=90), usegmt=True), NOW) == 0.0  # past: now
    assert parse_retry_after("9999999999", NOW) == MAX_RETRY_AFTER
    for unusable in (None, "", "soon", "-5", "1.5"):
        assert parse_retry_after(unusable, NOW) is None


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    for attempt, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)):
        delays = [backoff(attempt, 2.0, 60.0) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2 and min(delays) < ceiling / 2  # spread over the window


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        *((s, True) for s in (500, 502, 503, 429, 408, 409, 401)),
        *((s, False) for s in (400, 403, 404, 412, 422)),
    ],
)
def test_which_answers_are_retried(status, retryable):
    answer = httpx.Response(status, json={"resourceType": "OperationOutcome", "issue": [{"code": "processing"}]})
    error = failure(answer, "the EHR refused a Flag")
    assert isinstance(error, DeliveryError) and error.retryable is retryable
    assert error.reason == f"the EHR refused a Flag: HTTP {status} (processing)"


def test_error_text_carries_codes_only_never_the_ehrs_free_text():
    echo = {"resourceType": "OperationOutcome", "issue": [{"code": "invalid", "diagnostics": "Jane Doe born 1990"}]}
    assert "Jane" not in failure(httpx.Response(400, json=echo), "x").reason
    assert failure(httpx.Response(500, text="<html>Jane Doe</html>"), "x").reason == "x: HTTP 500"
    oauth = failure(httpx.Response(401, json={"error": "invalid_client", "error_description": "secret"}), "token")
    assert oauth.reason == "token: HTTP 401 (invalid_client)"
    throttled = failure(httpx.Response(429, headers={"Retry-After": "7"}), "x")
    assert throttled.retry_after == 7.0


def _ehr(scope: str = "launch openid", types: tuple[str, ...] = ("QuestionnaireResponse", "Flag")) -> EhrRegistration:
    return EhrRegistration(1, "https://ehr.example/fhir", "EHR", "app", "none", None, scope, types, "be", None, NOW)


def test_backend_scope_follows_the_ehrs_scope_syntax():
    assert backend_scope(_ehr(), {"capabilities": ["permission-v2", "permission-v1"]}) == (
        "system/QuestionnaireResponse.crus system/Flag.crus"
    )
    assert backend_scope(_ehr(), {"capabilities": ["permission-v1"]}) == (
        "system/QuestionnaireResponse.read system/QuestionnaireResponse.write system/Flag.read system/Flag.write"
    )
    assert backend_scope(_ehr("launch system/Flag.cu system/QuestionnaireResponse.c"), {}) == (
        "system/Flag.cu system/QuestionnaireResponse.c"  # listed at registration: used as they are
    )


def test_the_rate_limiter_spaces_requests_and_waits_out_a_retry_after():
    stop = threading.Event()
    limits = RateLimits(stop)
    started = time.monotonic()
    for _ in range(5):
        limits.wait_turn(1, per_second=20)
    assert time.monotonic() - started >= 4 / 20  # five turns: four gaps of 1/20 s
    limits.block(2, 0.3)
    assert 0 < limits.blocked_for(2) <= 0.3 and limits.blocked_for(1) == 0
    started = time.monotonic()
    limits.wait_turn(2, per_second=None)
    assert time.monotonic() - started >= 0.25
    limits.block(3, 60)
    stop.set()  # shutting down: a long wait ends at once
    with pytest.raises(DeliveryError, match="shutting down"):
        limits.wait_turn(3, per_second=None)


def test_token_endpoint_authentication_for_each_registered_method(tmp_path):
    """private_key_jwt (SMART Backend Services / RFC 7523): iss = sub = client_id, aud = the token endpoint, at
    most 5 minutes, a fresh jti, signed by a key our JWKS publishes; client_secret_basic; none (public)."""
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade(url)
    engine = build_engine(Settings(database_url=url, _env_file=None))
    keys = KeyStore(engine)
    endpoint = "https://ehr.example/auth/token"
    try:
        jwt_client = dataclasses.replace(_ehr(), auth_method="private_key_jwt")
        fields, basic = client_authentication(jwt_client, keys, endpoint)
        again, _ = client_authentication(jwt_client, keys, endpoint)
        assert basic is None and fields["client_assertion_type"] == ASSERTION_TYPE
        published = KeySet.import_key_set(keys.jwks())
        token = jwt.decode(fields["client_assertion"], published, algorithms=["RS384"])
        claims = token.claims
        assert token.header["alg"] == "RS384" and token.header["kid"] in {k.kid for k in published.keys}
        assert claims["iss"] == claims["sub"] == "app" and claims["aud"] == endpoint
        assert 0 < claims["exp"] - claims["iat"] <= 300
        assert claims["jti"] != jwt.decode(again["client_assertion"], published, algorithms=["RS384"]).claims["jti"]

        secret = dataclasses.replace(_ehr(), auth_method="client_secret_basic", client_secret="s3cret")
        fields, basic = client_authentication(secret, keys, endpoint)
        assert fields == {} and basic == ("app", "s3cret")  # HTTP Basic, sent by outbound.py
        assert client_authentication(_ehr(), keys, endpoint) == ({"client_id": "app"}, None)
    finally:
        engine.dispose()
