"""Bad bearer tokens at /fhir (issue 6 acceptance; docs/security.md "Tokens"; RFC 6750 §3): none, garbage, a bad
signature, ``alg: none``, HS256 signed with the public key, wrong ``aud`` or ``iss``, expired, not yet valid, an
unknown key, revoked — each answered 401 with ``WWW-Authenticate: Bearer`` and an OperationOutcome, and each
leaving an AuditEvent.  /metadata needs no token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

import httpx
import orjson
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def _claims(server: RunningServer, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "iss": f"{server.root}/auth",
        "aud": server.fhir_base,
        "sub": "someone",
        "scope": "system/*.rs",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 300,
    }
    return {**claims, **overrides}


def _hs256(header: dict, claims: dict, secret: bytes) -> str:
    """The classic key-confusion forgery, signed by hand (JOSE libraries rightly refuse to make it)."""
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _bad_tokens(server: RunningServer) -> dict[str, str | None]:
    good = mint(server, "system/*.rs")
    header, payload, signature = good.split(".")
    public = server.app.state.keys.jwks()["keys"][0]
    kid = public["kid"]
    stranger = RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)
    pem = RSAKey.import_key(public).as_pem(private=False)
    now = int(time.time())
    return {
        "none": None,
        "garbage": "not-a-jwt",
        "bad signature": f"{header}.{payload}.{signature[:-6]}AAAAAA",
        "alg none": f"{_b64({'alg': 'none', 'kid': kid})}.{payload}.",
        "HS256 with the public key": _hs256({"alg": "HS256", "kid": kid}, _claims(server), pem),
        "signed by a stranger": jwt.encode(
            {"alg": "RS384", "kid": kid}, _claims(server), stranger, algorithms=["RS384"]
        ),
        "wrong aud": mint(server, "system/*.rs", aud="https://other.example/fhir"),
        "wrong iss": mint(server, "system/*.rs", iss="https://other.example/auth"),
        "expired": mint(server, "system/*.rs", exp=now - 3600, iat=now - 4000),
        "not yet valid": mint(server, "system/*.rs", nbf=now + 3600),
    }


def test_bad_tokens_get_401_with_an_outcome_and_an_audit_record(guarded):
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2))
    cases = _bad_tokens(guarded)
    for name, token in cases.items():
        with client_for(guarded, token) as c:
            answer = c.get("/Observation")
        assert answer.status_code == 401, (name, answer.status_code, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer"), name
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome", name
        assert outcome["issue"][0]["code"] in ("login", "expired"), (name, outcome)
        if name == "expired":
            assert outcome["issue"][0]["code"] == "expired"
        if token is not None:
            assert token not in answer.text  # token material is never echoed
    with client_for(guarded, mint(guarded, "system/AuditEvent.rs")) as c:
        deadline = time.monotonic() + 10
        while True:
            found = c.get(
                "/AuditEvent",
                params={"outcome": "4", "subtype": "110122", "date": f"ge{started}", "_count": "200"},
            ).json()
            if len(found.get("entry", [])) >= len(cases) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert len(found.get("entry", [])) >= len(cases), "one AuditEvent per refused token"


def test_metadata_needs_no_token(guarded):
    with httpx.Client(base_url=guarded.fhir_base) as c:
        assert c.get("/metadata").status_code == 200
        assert c.get("/Patient").status_code == 401


def test_revoked_token_is_refused(guarded):
    token = mint(guarded, "system/*.rs", jti="revoke-me-" + uuid.uuid4().hex)
    with client_for(guarded, token) as c:
        assert c.get("/Patient").status_code == 200
        claims = orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        guarded.app.state.revocations.revoke_token(claims["jti"], claims["exp"])
        answer = c.get("/Patient")
    assert answer.status_code == 401
    assert "revoked" in answer.json()["issue"][0]["diagnostics"]


def test_capability_statement_declares_smart(guarded):
    with httpx.Client(base_url=guarded.fhir_base) as c:
        rest = c.get("/metadata").json()["rest"][0]
    assert rest["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in rest["security"]["extension"][0]["extension"]}
    assert uris["token"] == f"{guarded.root}/auth/token"


def test_logs_hold_no_token_or_query(guarded, caplog):
    token = mint(guarded, "system/*.rs")
    secret_name = "Zebediah" + uuid.uuid4().hex[:6]
    with caplog.at_level("DEBUG", logger="fhir_server"), client_for(guarded, token) as c:
        c.get("/Patient", params={"name": secret_name})
        c.get("/Patient", params={"name": secret_name}, headers={"Authorization": f"Bearer {token}x"})
    assert caplog.records, "the access log ran"
    assert token[:40] not in caplog.text and token.split(".")[2][:20] not in caplog.text
    assert secret_name not in caplog.text
