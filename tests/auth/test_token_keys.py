"""Which key verifies a token (auth/tokens.py ``signing_key``): the one its ``kid`` names, or, for a token without
a ``kid``, the only key of a one-key JWK Set (OpenID Connect Core §10.1; the SMART project's launcher signs its
id_tokens so).  Several keys and no kid, an unknown kid, or an encryption key: refused."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from fhir_server.auth.tokens import TokenError, verify_access_token

ISSUER, AUDIENCE = "https://launcher.example.org", "our-client"


def _key(**parameters) -> RSAKey:
    return RSAKey.generate_key(2048, parameters=parameters, private=True, auto_kid=False)


def _public(*keys: RSAKey) -> KeySet:
    return KeySet([RSAKey.import_key(k.as_dict(private=False)) for k in keys])


def _token(key: RSAKey, **header) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "Practitioner/1", "iat": now, "exp": now + 300}
    return jwt.encode({"alg": "RS256", "typ": "JWT", **header}, claims, key, algorithms=["RS256"])


def _verify(token: str, keys: KeySet) -> dict:
    return verify_access_token(token, lambda kid: keys, issuer=ISSUER, audience=AUDIENCE)


def test_a_token_without_kid_verifies_with_the_only_key_of_the_set():
    key = _key(use="sig")
    assert _verify(_token(key), _public(key))["sub"] == "Practitioner/1"
    unlabelled = _key()  # no kid and no use in the JWKS either, as the launcher publishes it
    assert _verify(_token(unlabelled), _public(unlabelled))["sub"] == "Practitioner/1"


def test_without_kid_the_one_key_that_fits_the_algorithm():
    """An RS256 token without kid, beside an EC key in the same set: the RSA key is the only one that fits."""
    key = _key(use="sig")
    ec = ECKey.generate_key("P-256", parameters={"use": "sig"}, private=False)
    assert _verify(_token(key), KeySet([*_public(key).keys, ec]))["sub"] == "Practitioner/1"


def test_a_kid_still_picks_its_key_among_several():
    first, second = _key(kid="a"), _key(kid="b")
    assert _verify(_token(second, kid="b"), _public(first, second))["sub"] == "Practitioner/1"


def _as_encryption_key(key: RSAKey) -> KeySet:
    return KeySet([RSAKey.import_key({**key.as_dict(private=False), "use": "enc"})])


SIGNER, OTHER = _key(kid="a"), _key(kid="b")
UNLABELLED = _key()
REFUSED = {
    "several keys, no kid": lambda: (_token(SIGNER), _public(SIGNER, OTHER)),
    "unknown kid": lambda: (_token(SIGNER, kid="zzz"), _public(SIGNER)),
    "the only key, published for encryption": lambda: (_token(UNLABELLED), _as_encryption_key(UNLABELLED)),
    "the only key, but not the signer": lambda: (_token(SIGNER), _public(OTHER)),
    "the only RSA key, declared for another algorithm": lambda: (
        _token(UNLABELLED),
        KeySet([RSAKey.import_key({**UNLABELLED.as_dict(private=False), "alg": "RS512"})]),
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused(case):
    token, keys = REFUSED[case]()
    with pytest.raises(TokenError):
        _verify(token, keys)
