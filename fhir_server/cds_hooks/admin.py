"""``fhir-server cds-clients add|list|remove``: the EHRs allowed to call the CDS Hooks services."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhir_server.cds_hooks.fhir_bases import FhirBaseError, normalise
from fhir_server.store import cds_store
from fhir_server.store.engine import Database


class CdsAdminError(Exception):
    pass


def add_client(
    engine: Database,
    issuer: str,
    name: str,
    jwks_url: str | None,
    jwks_file: Path | None,
    fhir_servers: Sequence[str] = (),
) -> None:
    """Registers (or replaces) a CDS client.  ``fhir_servers``: the EHR FHIR bases its hook requests may name as
    ``fhirServer``; without any, the client must send every prefetch the services ask for."""
    if not issuer.strip():
        raise CdsAdminError("--issuer is required (the iss of the EHR's CDS Hooks JWTs)")
    if (jwks_url is None) == (jwks_file is None):
        raise CdsAdminError("give exactly one of --jwks-url and --jwks-file")
    jwks = None
    if jwks_file is not None:
        try:
            document = orjson.loads(jwks_file.read_bytes())
            keys = KeySet.import_key_set(document)
        except OSError as exc:
            raise CdsAdminError(f"{jwks_file}: cannot read ({exc.strerror})") from None
        except (orjson.JSONDecodeError, JoseError, ValueError, TypeError) as exc:
            raise CdsAdminError(f"{jwks_file}: not a JWKS document ({exc})") from None
        if any("d" in raw for raw in document.get("keys", []) if isinstance(raw, dict)):
            raise CdsAdminError(f"{jwks_file}: holds a private key; register the public keys only")
        jwks = orjson.dumps({"keys": [k.as_dict(private=False) for k in keys.keys]}).decode()
    elif not (jwks_url or "").startswith(("https://", "http://")):
        raise CdsAdminError("--jwks-url must be an http(s) URL")
    cds_store.add_client(engine, issuer.strip(), name or issuer, jwks_url, jwks, _fhir_bases(fhir_servers))


def _fhir_bases(urls: Sequence[str]) -> list[str]:
    bases: list[str] = []
    for url in urls:
        try:
            base = normalise(url.strip())
        except FhirBaseError as exc:
            raise CdsAdminError(f"--fhir-server {url}: {exc}") from None
        if base not in bases:
            bases.append(base)
    return bases


def list_clients(engine: Database) -> list[str]:
    return [
        f"{c['issuer']}\t{c['name']}\t{c['jwks_uri'] or '(registered JWKS)'}\t"
        f"{' '.join(c['fhir_servers']) or '(prefetch only)'}"
        for c in cds_store.list_clients(engine)
    ]


def remove_client(engine: Database, issuer: str) -> None:
    if not cds_store.remove_client(engine, issuer):
        raise CdsAdminError(f"no CDS client with issuer {issuer}")
