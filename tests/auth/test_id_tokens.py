"""id_token verification (OpenID Connect Core §3.1.3.7) and the identity-provider settings, without a network:
every check refuses a token that is wrong in exactly that one way, and the settings refuse configurations that
cannot be safe (plain http, HMAC or ``none`` algorithms, passwords sent to nobody)."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from fhir_server.auth.external_idp import IdpConfig
from fhir_server.auth.id_tokens import IdTokenError, claim_value, verify_id_token
from fhir_server.config import Settings

ISSUER, CLIENT, NONCE = "https://idp.example.org", "our-client", "n-0123456789"
ALGORITHMS = ("RS256", "ES256")
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "alg": "RS256"}, private=True)
EC = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "alg": "ES256"}, private=True)
UNLABELLED = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)  # usable with any RS alg
PUBLISHED = KeySet([RSAKey.import_key(RSA.as_dict(private=False)), ECKey.import_key(EC.as_dict(private=False))])


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": CLIENT, "sub": "u-1", "iat": now, "exp": now + 300, "nonce": NONCE}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def signed(body: dict[str, Any], key: Any = RSA, alg: str = "RS256", **header: Any) -> str:
    return jwt.encode({"alg": alg, "kid": key.kid, **header}, body, key, algorithms=[alg])


def verify(token: str, keys: Any = None, **options: Any) -> dict[str, Any]:
    given = {"issuer": ISSUER, "client_id": CLIENT, "nonce": NONCE, "algorithms": ALGORITHMS, **options}
    return verify_id_token(token, keys or (lambda kid: PUBLISHED), **given)


def unsigned(body: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'kid': 'rsa-1'})}.{part(body)}."


def test_a_good_token_verifies_with_rsa_and_ec():
    assert verify(signed(claims()))["sub"] == "u-1"
    assert verify(signed(claims(aud=[CLIENT], azp=CLIENT), EC, "ES256"))["sub"] == "u-1"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (lambda: unsigned(claims()), "algorithm that is not accepted"),
        (lambda: signed(claims(), UNLABELLED, "RS384"), "algorithm that is not accepted"),  # not on the allow-list
        (lambda: "not-a-jwt", "not a signed JWT"),
        (lambda: signed(claims(), UNLABELLED), "signature"),  # the published kid, another key
        (
            lambda: signed(claims(), RSAKey.generate_key(2048, parameters={"kid": "x"}, private=True)),
            "does not publish",
        ),
        (lambda: signed(claims(iss="https://evil.example.org")), "another identity provider"),
        (lambda: signed(claims(aud="someone-else")), "meant for another client"),
        (lambda: signed(claims(aud=[CLIENT, "someone-else"])), "also meant for other parties"),
        (lambda: signed(claims(azp="someone-else")), "issued to another client"),
        (lambda: signed(claims(exp=int(time.time()) - 120)), "expired"),
        (lambda: signed(claims(exp=None)), "no expiry"),
        (lambda: signed(claims(iat=int(time.time()) + 600)), "in the future"),
        (lambda: signed(claims(iat=int(time.time()) - 3600)), "too old"),
        (lambda: signed(claims(iat=None)), "no issue time"),
        (lambda: signed(claims(nonce="another")), "nonce mismatch"),
        (lambda: signed(claims(nonce=None)), "nonce mismatch"),
        (lambda: signed(claims(sub=None)), "no subject"),
    ],
)
def test_each_wrong_token_is_refused_for_its_reason(token, message):
    with pytest.raises(IdTokenError, match=message):
        verify(token())


def test_hmac_signed_with_a_public_key_is_refused_even_if_listed():
    """HS256 keyed with something the provider publishes would let anyone sign; it is never accepted."""
    secret = OctKey.import_key(orjson.dumps(RSA.as_dict(private=False)))
    token = jwt.encode({"alg": "HS256", "kid": "rsa-1"}, claims(), secret, algorithms=["HS256"])
    with pytest.raises(IdTokenError, match="algorithm that is not accepted"):
        verify(token, algorithms=("HS256", "RS256"))


def test_keys_are_asked_for_by_kid_so_a_rotation_is_picked_up():
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa-2", "alg": "RS256"}, private=True)
    asked: list[str | None] = []

    def keys(kid: str | None) -> KeySet:
        asked.append(kid)
        return KeySet([RSAKey.import_key(rotated.as_dict(private=False))])

    assert verify(signed(claims(), rotated), keys)["sub"] == "u-1"
    assert asked == ["rsa-2"]


def test_email_names_a_user_only_when_verified():
    assert claim_value({"email": "a@example.org", "email_verified": True}, "email") == "a@example.org"
    assert claim_value({"email": "a@example.org", "email_verified": "true"}, "email") is None
    assert claim_value({"email": "a@example.org"}, "email") is None
    assert claim_value({"preferred_username": "dr.a"}, "preferred_username") == "dr.a"
    assert claim_value({"preferred_username": ""}, "preferred_username") is None


def settings(**values: Any) -> Settings:
    base = {"oidc_issuer": ISSUER, "oidc_client_id": CLIENT, "oidc_client_secret": "s3cret"}
    return Settings(_env_file=None, **{**base, **values})


def test_no_issuer_means_no_provider_and_a_good_configuration_is_read():
    assert IdpConfig.from_settings(Settings(_env_file=None)) is None
    config = IdpConfig.from_settings(settings())
    assert config is not None and config.display_name == "idp.example.org" and config.scopes == "openid profile email"
    assert IdpConfig.from_settings(settings(oidc_issuer="http://127.0.0.1:9000/auth")) is not None  # loopback only


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"oidc_issuer": "http://idp.example.org"}, "https"),
        ({"oidc_client_id": ""}, "CLIENT_ID"),
        ({"oidc_client_secret": ""}, "CLIENT_SECRET"),
        ({"oidc_token_auth_method": "client_secret_jwt"}, "TOKEN_AUTH_METHOD"),
        ({"oidc_scopes": "profile email"}, "openid"),
        ({"oidc_user_claim": "name"}, "USER_CLAIM"),
        ({"oidc_id_token_algorithms": ["RS256", "HS256"]}, "asymmetric"),
        ({"oidc_id_token_algorithms": ["none"]}, "asymmetric"),
    ],
)
def test_unsafe_or_incomplete_settings_stop_the_start(values, message):
    with pytest.raises(ValueError, match=message):
        IdpConfig.from_settings(settings(**values))


def test_private_key_jwt_needs_no_secret():
    config = IdpConfig.from_settings(settings(oidc_client_secret="", oidc_token_auth_method="private_key_jwt"))
    assert config is not None and config.token_auth_method == "private_key_jwt"
