"""What the ``fhir-server clients | users | token | keys`` commands do (cli.py only parses arguments).

Every refusal is an AdminError whose message names what is wrong; the CLI prints it and exits non-zero.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhir_server.auth import scope_policy, urls
from fhir_server.auth.credentials import digest, hash_password, new_secret
from fhir_server.auth.issuance import access_token_claims
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.models import CLIENT_ID, Client
from fhir_server.auth.revocation import utcnow
from fhir_server.auth.scopes import parse_scope
from fhir_server.config import Settings
from fhir_server.store import oauth_store
from fhir_server.store.engine import Database

DEFAULT_APP_SCOPE = "openid fhirUser launch launch/patient offline_access online_access patient/*.rs user/*.rs"
DEFAULT_BACKEND_SCOPE = "system/*.rs"
USERNAME = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
FHIR_USER = re.compile(r"(Practitioner|PractitionerRole|Patient|RelatedPerson|Person)/[A-Za-z0-9\-.]{1,64}")
ORGANIZATION = re.compile(r"Organization/[A-Za-z0-9\-.]{1,64}")
MAX_CLI_TOKEN_LIFETIME = 3600
MIN_PASSWORD = 8


class AdminError(Exception):
    pass


@dataclass(frozen=True)
class NewClient:
    client_id: str
    secret: str | None  # shown once; only its digest is stored
    scope: str


def add_client(
    engine: Database,
    *,
    name: str,
    kind: str,  # public | secret | jwks | jwks_url
    redirect_uris: list[str],
    scope: str | None = None,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
    origins: list[str] | None = None,
    client_id: str | None = None,
) -> NewClient:
    client_id = client_id or uuid.uuid4().hex
    if not CLIENT_ID.fullmatch(client_id):
        raise AdminError("client id must be 1-64 characters of A-Z a-z 0-9 . _ ~ -")
    if not name.strip():
        raise AdminError("--name must not be empty")
    for uri in redirect_uris:
        parts = urlsplit(uri)
        if not parts.scheme or not (parts.netloc or parts.scheme not in ("http", "https")) or parts.fragment:
            raise AdminError(f"redirect URI '{uri}' must be an absolute URI without a #fragment")
    for origin in origins or []:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise AdminError(f"origin '{origin}' must be scheme://host[:port], nothing more")
    backend = kind in ("jwks", "jwks_url")
    if not backend and not redirect_uris:
        raise AdminError("an app client needs at least one --redirect-uri")
    scope = " ".join((scope or (DEFAULT_BACKEND_SCOPE if backend else DEFAULT_APP_SCOPE)).split())
    bad = [s for s in scope.split() if s not in scope_policy.IDENTITY_SCOPES and parse_scope(s) is None]
    if bad:
        raise AdminError(f"not a valid SMART scope: {', '.join(bad)}")
    if (kind == "jwks" and jwks is None) or (kind == "jwks_url" and jwks_url is None):
        raise AdminError("a Backend Services client needs its public keys: --jwks-file or --jwks-url")
    if jwks_url is not None:
        _check_url(jwks_url, "--jwks-url")
    secret = new_secret() if kind == "secret" else None
    method = {"public": "none", "secret": "client_secret_basic"}.get(kind, "private_key_jwt")
    values = {
        "client_id": client_id,
        "name": name.strip()[:200],
        "client_type": "public" if kind == "public" else "confidential",
        "auth_method": method,
        "secret_hash": digest(secret) if secret else None,
        "redirect_uris": orjson.dumps(redirect_uris).decode(),
        "scope": scope,
        "jwks": orjson.dumps(validate_jwks(jwks)).decode() if jwks is not None else None,
        "jwks_url": jwks_url,
        "origins": orjson.dumps(origins or []).decode(),
        "created_at": utcnow(),
    }
    try:
        oauth_store.add_client(engine, values)
    except oauth_store.AlreadyExists as exc:
        raise AdminError(str(exc)) from None
    return NewClient(client_id, secret, scope)


def load_jwks_file(path: str) -> dict[str, Any]:
    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise AdminError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise AdminError(f"{path} is not JSON") from None
    return validate_jwks(data, path)


def validate_jwks(data: Any, where: str = "the JWKS") -> dict[str, Any]:
    """A public JWKS whose keys have a kid and can verify RS384 or ES384 assertions."""
    if isinstance(data, dict) and "kty" in data:
        data = {"keys": [data]}  # a single JWK
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or not data["keys"]:
        raise AdminError(f"{where} is not a JWKS: expected {{'keys': [...]}} with at least one key")
    for key in data["keys"]:
        if not isinstance(key, dict) or not key.get("kid"):
            raise AdminError(f"every key in {where} needs a kid (the assertion names its key by kid)")
        if key.get("kty") not in ("RSA", "EC"):
            raise AdminError(
                f"key {key.get('kid')} in {where}: only RSA (RS384) and EC P-384 (ES384) keys are accepted"
            )
        if "d" in key:
            raise AdminError(f"key {key['kid']} in {where} holds a private key: register the public keys only")
    try:
        KeySet.import_key_set(data)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise AdminError(f"{where} holds a key that cannot be read: {exc}") from None
    return data


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise AdminError(f"{what} must be an https URL (http only for localhost)")


def list_clients(engine: Database) -> list[Client]:
    return [Client.from_row(r) for r in oauth_store.list_clients(engine)]


def remove_client(engine: Database, client_id: str) -> None:
    if not oauth_store.remove_client(engine, client_id):
        raise AdminError(f"unknown client '{client_id}'")


def add_user(
    engine: Database,
    username: str,
    password: str | None,
    fhir_user: str,
    *,
    may_pick_patient: bool,
    display_name: str = "",
    external_subject: str | None = None,
    external_issuer: str | None = None,
    supervises: Sequence[str] = (),
) -> str:
    """``password`` None: the user signs in only through the external identity provider ``external_issuer``, as
    the identity whose configured claim (FHIR_SERVER_OIDC_USER_CLAIM) is ``external_subject``.  ``supervises``:
    the organisations whose reports the user may run (reporting/access.py)."""
    _check_organizations(supervises)
    if not USERNAME.fullmatch(username):
        raise AdminError("username must be 1-128 characters of A-Z a-z 0-9 . _ @ + -")
    if not FHIR_USER.fullmatch(fhir_user):
        raise AdminError("--fhir-user must be like Practitioner/123 (Practitioner, PractitionerRole, Patient, ...)")
    if password is None and external_subject is None:
        raise AdminError("a user needs a password, an --external-subject, or both")
    if password is not None and len(password) < MIN_PASSWORD:
        raise AdminError(f"the password must have at least {MIN_PASSWORD} characters")
    if external_subject is not None:
        if not external_issuer:
            raise AdminError("--external-subject needs an identity provider: set FHIR_SERVER_OIDC_ISSUER first")
        if not 1 <= len(external_subject) <= 255 or not external_subject.isprintable():
            raise AdminError("--external-subject must be 1-255 printable characters")
    user_id = uuid.uuid4().hex
    values = {
        "user_id": user_id,
        "username": username,
        "password_hash": hash_password(password) if password is not None else None,
        "fhir_user": fhir_user,
        "may_pick_patient": may_pick_patient,
        "display_name": display_name[:200],
        "created_at": utcnow(),
        "external_issuer": external_issuer if external_subject is not None else None,
        "external_subject": external_subject,
    }
    try:
        oauth_store.add_user(engine, values, supervises)
    except oauth_store.AlreadyExists as exc:
        raise AdminError(str(exc)) from None
    return user_id


def list_users(engine: Database) -> list[dict[str, Any]]:
    return [
        {**{k: v for k, v in row.items() if k != "password_hash"}, "supervises": supervised(engine, row["user_id"])}
        for row in oauth_store.list_users(engine)
    ]


def supervised(engine: Database, user_id: str, fhir_user: str | None = None) -> list[str]:
    return oauth_store.supervised(engine, user_id, fhir_user)


def set_supervised(engine: Database, username: str, organizations: Sequence[str]) -> None:
    """Replaces the organisations a user supervises (none: the user runs no reports)."""
    _check_organizations(organizations)
    if not oauth_store.set_supervised(engine, username, organizations):
        raise AdminError(f"unknown user '{username}'")


def _check_organizations(organizations: Sequence[str]) -> None:
    for organization in organizations:
        if not ORGANIZATION.fullmatch(organization):
            raise AdminError(f"--supervises must be like Organization/123, not '{organization[:80]}'")


def remove_user(engine: Database, username: str) -> None:
    if not oauth_store.remove_user(engine, username):
        raise AdminError(f"unknown user '{username}'")


def mint_token(
    engine: Database,
    keys: KeyStore,
    settings: Settings,
    *,
    client_id: str,
    scope: str,
    base_url: str,
    patient: str | None = None,
    lifetime: int = 300,
) -> str:
    """A signed access token for a registered client, for trying the API with curl.  Only scopes the client is
    registered for; patient/ scopes need --patient."""
    row = oauth_store.get_client(engine, client_id) if CLIENT_ID.fullmatch(client_id) else None
    if row is None:
        raise AdminError(f"unknown client '{client_id}'")
    requested = list(dict.fromkeys(scope.split()))
    if not requested:
        raise AdminError("--scope must name at least one scope")
    malformed = [s for s in requested if s not in scope_policy.IDENTITY_SCOPES and parse_scope(s) is None]
    if malformed:
        raise AdminError(f"not a valid SMART scope: {', '.join(malformed)}")
    granted = scope_policy.within_client(scope, row["scope"])
    refused = [s for s in requested if s not in granted]
    if refused:
        raise AdminError(f"scope not allowed for client '{client_id}': {', '.join(refused)} (allowed: {row['scope']})")
    if any(s.startswith("patient/") for s in granted) and not patient:
        raise AdminError("patient/ scopes need --patient (the patient the token is confined to)")
    if not 1 <= lifetime <= MAX_CLI_TOKEN_LIFETIME:
        raise AdminError(f"--lifetime must be between 1 and {MAX_CLI_TOKEN_LIFETIME} seconds")
    claims = access_token_claims(
        issuer=urls.issuer(settings, base_url),
        audience=urls.fhir_base(settings, base_url),
        client_id=client_id,
        subject=client_id,
        scope=" ".join(granted),
        lifetime=lifetime,
        patient=patient,
    )
    return keys.sign(claims)
