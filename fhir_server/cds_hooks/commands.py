"""``fhir-server cds-clients add|list|remove``: argument parsing and printing; the work is in cds_hooks/admin.py.
Every command migrates the database first (idempotent), so it works on a fresh database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fhir_server.config import Settings


def _run(args: argparse.Namespace) -> int:
    from fhir_server.cds_hooks import admin
    from fhir_server.store.engine import build_engine

    settings = Settings()
    engine = build_engine(settings)
    try:
        if args.cds_command == "add":
            jwks_file = Path(args.jwks_file) if args.jwks_file else None
            servers = args.fhir_server or []
            admin.add_client(engine, args.issuer, args.name or args.issuer, args.jwks_url, jwks_file, servers)
            print(f"registered CDS client {args.issuer}")
        elif args.cds_command == "list":
            for line in admin.list_clients(engine):
                print(line)
        else:
            admin.remove_client(engine, args.issuer)
            print(f"removed CDS client {args.issuer}")
        return 0
    except admin.CdsAdminError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def add_cds_commands(commands: Any) -> None:
    cds = commands.add_parser("cds-clients", help="EHRs allowed to call the CDS Hooks services")
    sub = cds.add_subparsers(dest="cds_command", required=True)
    add = sub.add_parser("add", help="register an EHR's CDS Hooks JWT issuer and its keys")
    add.add_argument("--issuer", required=True, help="the iss of the EHR's JWTs")
    add.add_argument("--name", help="a label for lists")
    keys = add.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks-url", help="where the EHR publishes its public keys")
    keys.add_argument("--jwks-file", help="a JWKS file with the EHR's public keys")
    add.add_argument(
        "--fhir-server",
        action="append",
        metavar="URL",
        help="an EHR FHIR base the client's hook requests may name as fhirServer (repeatable; https, or http for "
        "loopback only); the service reads from no other. Without it the client must send the prefetch",
    )
    sub.add_parser("list", help="the registered CDS clients")
    remove = sub.add_parser("remove", help="unregister a CDS client")
    remove.add_argument("--issuer", required=True)
    cds.set_defaults(func=_run)
