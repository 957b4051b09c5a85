"""docs/security.md token rules for the resource server: signature, alg allow-list (never none, never HS256 with the
public key), iss, aud, exp, nbf; each refusal carries the OperationOutcome code the API answers with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from fhir_server.auth.tokens import TokenError, verify_access_token

ISSUER, AUDIENCE = "https://fhir.example.org/auth", "https://fhir.example.org/fhir"
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
EC = ECKey.generate_key("P-384", parameters={"kid": "ec-1"})
KEYS = KeySet([RSA, EC])


def claims(**overrides):
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "client-1",
        "exp": now + 300,
        "iat": now,
        "scope": "system/*.rs",
        **overrides,
    }


def sign(key, alg, **overrides):
    return jwt.encode({"alg": alg, "kid": key.kid}, claims(**overrides), key, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(("key", "alg"), [(RSA, "RS384"), (RSA, "RS256"), (EC, "ES384")])
def test_valid_tokens(key, alg):
    assert verify_access_token(sign(key, alg), KEYS, issuer=ISSUER, audience=AUDIENCE)["sub"] == "client-1"


def test_audience_may_be_a_list():
    token = sign(RSA, "RS384", aud=["other", AUDIENCE])
    assert verify_access_token(token, KEYS, issuer=ISSUER, audience=AUDIENCE)


def _none_token():
    header = b64(orjson.dumps({"alg": "none", "kid": "rsa-1"}))
    return f"{header}.{b64(orjson.dumps(claims()))}."


def _hs256_with_public_key():
    public_pem = RSA.as_pem(private=False)
    header = b64(orjson.dumps({"alg": "HS256", "kid": "rsa-1"}))
    body = b64(orjson.dumps(claims()))
    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def _other_key_same_kid():
    impostor = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    return jwt.encode({"alg": "RS384", "kid": "rsa-1"}, claims(), impostor, algorithms=["RS384"])


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: "", "login"),
        (lambda: "garbage", "login"),
        (lambda: "a.b.c", "login"),
        (_none_token, "login"),
        (_hs256_with_public_key, "login"),
        (_other_key_same_kid, "login"),
        (lambda: jwt.encode({"alg": "RS384", "kid": "nope"}, claims(), RSA, algorithms=["RS384"]), "login"),
        (lambda: sign(RSA, "RS384", aud="https://elsewhere.example.org/fhir"), "login"),
        (lambda: sign(RSA, "RS384", iss="https://evil.example.org"), "login"),
        (lambda: sign(RSA, "RS384", exp=int(time.time()) - 3600), "expired"),
        (lambda: sign(RSA, "RS384", nbf=int(time.time()) + 3600), "login"),
        (lambda: sign(EC, "ES384", exp="soon"), "login"),
    ],
    ids=[
        "empty",
        "garbage",
        "not-base64",
        "alg-none",
        "hs256-public-key",
        "bad-signature",
        "unknown-kid",
        "wrong-aud",
        "wrong-iss",
        "expired",
        "not-yet-valid",
        "no-numeric-exp",
    ],
)
def test_bad_tokens_are_refused_with_the_right_code(make, code):
    with pytest.raises(TokenError) as refused:
        verify_access_token(make(), KEYS, issuer=ISSUER, audience=AUDIENCE)
    assert refused.value.code == code
    assert "eyJ" not in str(refused.value)  # never echoes token material
