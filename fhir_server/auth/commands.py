"""The authorization server's commands: ``fhir-server clients | users | token | keys`` (signing and secret keys).

Argument parsing and printing only; what each command does is in auth/admin.py.  Every command migrates the
database first (idempotent), so it works on a fresh database.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from fhir_server.config import Settings
from fhir_server.store.engine import Database


def _admin(action: Callable[[Settings, Database], int]) -> Callable[[argparse.Namespace], int]:
    """Runs an authorization-admin command (on a database the command line has migrated); AdminError → message and
    exit code 1."""

    def run(_: argparse.Namespace) -> int:
        from fhir_server.auth.admin import AdminError
        from fhir_server.store.crypto import SecretKeyError
        from fhir_server.store.engine import build_engine

        settings = Settings()
        engine = build_engine(settings)
        try:
            return action(settings, engine)
        except (AdminError, SecretKeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            engine.dispose()

    return run


def _clients_add(args: argparse.Namespace) -> Callable[[Settings, Database], int]:
    def action(_: Settings, engine: Database) -> int:
        from fhir_server.auth import admin

        kind = "public" if args.public else "jwks_url" if args.jwks_url else "jwks" if args.jwks_file else "secret"
        created = admin.add_client(
            engine,
            name=args.name,
            kind=kind,
            redirect_uris=args.redirect_uri or [],
            scope=" ".join(args.scope) if args.scope else None,
            jwks=admin.load_jwks_file(args.jwks_file) if args.jwks_file else None,
            jwks_url=args.jwks_url,
            origins=args.origin or [],
            client_id=args.client_id,
        )
        print(f"client_id: {created.client_id}")
        if created.secret:
            print(f"client_secret: {created.secret}")
            print("(the secret is shown only now; store it safely)", file=sys.stderr)
        print(f"scope: {created.scope}")
        return 0

    return action


def _clients_list(_: Settings, engine: Database) -> int:
    from fhir_server.auth import admin

    for c in admin.list_clients(engine):
        print(f"{c.client_id}\t{c.name}\t{c.auth_method}\tscope={c.scope}\tredirect_uris={','.join(c.redirect_uris)}")
    return 0


def _users_add(args: argparse.Namespace) -> Callable[[Settings, Database], int]:
    def action(settings: Settings, engine: Database) -> int:
        from fhir_server.auth import admin

        password: str | None = None
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        elif args.external_subject is None:  # linked to the identity provider: no local password unless asked
            password = getpass.getpass("password: ")
            if getpass.getpass("again: ") != password:
                raise admin.AdminError("the passwords differ")
        user_id = admin.add_user(
            engine,
            args.username,
            password,
            args.fhir_user,
            may_pick_patient=args.may_pick_patient,
            display_name=args.name,
            external_subject=args.external_subject,
            external_issuer=settings.oidc_issuer or None,
            supervises=args.supervises or [],
        )
        print(f"user {args.username} ({args.fhir_user}) added, sub {user_id}")
        if args.supervises:
            print(f"runs reports for {', '.join(args.supervises)} and the programs nested in them")
        if args.external_subject is not None:
            print(f"signs in at {settings.oidc_issuer} as {settings.oidc_user_claim}={args.external_subject}")
        return 0

    return action


def _users_list(_: Settings, engine: Database) -> int:
    from fhir_server.auth import admin

    for u in admin.list_users(engine):
        picker = "may pick patients" if u["may_pick_patient"] else "-"
        linked = f"external={u['external_subject']}" if u["external_subject"] else "-"
        supervises = ",".join(u["supervises"]) or "-"
        print(f"{u['username']}\t{u['fhir_user']}\t{picker}\t{linked}\tsupervises={supervises}\t{u['display_name']}")
    return 0


def _users_supervise(args: argparse.Namespace) -> Callable[[Settings, Database], int]:
    def action(_: Settings, engine: Database) -> int:
        from fhir_server.auth import admin

        admin.set_supervised(engine, args.username, args.organizations)
        what = ", ".join(args.organizations) or "no organisation (runs no reports)"
        print(f"{args.username} now supervises {what}")
        return 0

    return action


def _token(args: argparse.Namespace) -> Callable[[Settings, Database], int]:
    def action(settings: Settings, engine: Database) -> int:
        from fhir_server.auth import admin
        from fhir_server.auth.keys import KeyStore

        base = settings.public_url or args.base_url
        print(
            admin.mint_token(
                engine,
                KeyStore(engine),
                settings,
                client_id=args.client_id,
                scope=args.scope,
                base_url=base,
                patient=args.patient,
                lifetime=args.lifetime,
            )
        )
        return 0

    return action


def _keys_rotate(_: Settings, engine: Database) -> int:
    from fhir_server.auth.keys import KeyStore

    print(f"new signing key {KeyStore(engine).rotate()}; earlier keys stay published for 24 hours")
    return 0


def _keys_new_secret(args: argparse.Namespace) -> int:
    """A new secret key (store/crypto.py): printed, or written to an owner-only file that is never overwritten."""
    from pathlib import Path

    from fhir_server.store.crypto import SecretKeyError, generate_key, keyring_from_settings, write_key_file

    if args.unless_configured:  # `make serve`: only when no key is set up yet (environment, .env or key file)
        try:
            if keyring_from_settings(Settings()).configured:
                return 0
        except SecretKeyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    key = generate_key()
    if not args.file:
        print(key)
        return 0
    try:
        write_key_file(Path(args.file), key)
    except FileExistsError:
        print(
            f"error: {args.file} exists; a key file is never overwritten (stored secrets need its key)", file=sys.stderr
        )
        return 1
    print(
        f"wrote a new secret key to {args.file} (readable by you only); keep a copy apart from the database's "
        "backups: without it the stored secrets cannot be read",
        file=sys.stderr,
    )
    return 0


def _keys_rotate_secret(_: Settings, engine: Database) -> int:
    from fhir_server.console import progress_bar
    from fhir_server.store import secret_store

    ring = secret_store.keyring(engine)
    if not ring.configured:
        print("error: set FHIR_SERVER_SECRET_KEY (or the key file) to the new key first", file=sys.stderr)
        return 1
    print(f"re-encrypting every stored secret under key {ring.current_id} ...", file=sys.stderr)
    done = secret_store.rotate(engine, progress=progress_bar)
    for column, count in done.re_encrypted.items():
        print(f"  {column}: {count}")
    print(
        f"{done.total} secrets re-encrypted, {done.already_current} already under key {ring.current_id}"
        + (f", {done.changed_meanwhile} rewritten meanwhile by a server" if done.changed_meanwhile else "")
        + "; the previous key (FHIR_SERVER_SECRET_KEY_PREVIOUS) is no longer needed"
    )
    return 0


def _remove(what: str, args: argparse.Namespace) -> Callable[[Settings, Database], int]:
    def action(_: Settings, engine: Database) -> int:
        from fhir_server.auth import admin

        if what == "client":
            admin.remove_client(engine, args.client_id)
        else:
            admin.remove_user(engine, args.username)
        print(f"{what} removed")
        return 0

    return action


def add_auth_commands(commands: Any) -> None:
    """Adds clients, users, token and keys to the ``fhir-server`` sub-commands."""
    clients = commands.add_parser("clients", help="OAuth clients (apps, EHRs, Backend Services)")
    client_commands = clients.add_subparsers(dest="clients_command", required=True)
    add = client_commands.add_parser("add", help="register a client; prints its client_id (and secret, once)")
    add.add_argument("--name", required=True)
    add.add_argument("--redirect-uri", action="append", help="exact redirect URI (repeatable)")
    add.add_argument("--scope", action="append", help="allowed scopes, space separated (repeatable)")
    kind = add.add_mutually_exclusive_group()
    kind.add_argument("--public", action="store_true", help="a public app (no secret; PKCE only)")
    kind.add_argument("--secret", action="store_true", help="a confidential app with a generated secret (default)")
    kind.add_argument("--jwks-file", help="public JWKS of a Backend Services client (private_key_jwt)")
    kind.add_argument("--jwks-url", help="URL of the client's public JWKS (private_key_jwt)")
    add.add_argument("--origin", action="append", help="browser origin allowed by CORS (repeatable)")
    add.add_argument("--client-id", help="choose the client_id instead of a generated one")
    add.set_defaults(func=lambda a: _admin(_clients_add(a))(a))
    client_commands.add_parser("list", help="registered clients").set_defaults(func=_admin(_clients_list))
    remove = client_commands.add_parser("remove", help="delete a client and its refresh tokens")
    remove.add_argument("client_id")
    remove.set_defaults(func=lambda a: _admin(_remove("client", a))(a))

    users = commands.add_parser("users", help="users who sign in at /auth/login")
    user_commands = users.add_subparsers(dest="users_command", required=True)
    add_user = user_commands.add_parser("add", help="add a user (asks for the password)")
    add_user.add_argument("username")
    add_user.add_argument("--fhir-user", required=True, help="the user's FHIR resource, e.g. Practitioner/123")
    add_user.add_argument("--may-pick-patient", action="store_true", help="may choose the patient in standalone launch")
    add_user.add_argument("--name", default="", help="display name")
    add_user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add_user.add_argument(
        "--external-subject",
        help="sign-in through the identity provider (FHIR_SERVER_OIDC_ISSUER): the value of its user claim "
        "(FHIR_SERVER_OIDC_USER_CLAIM) for this user; without --password-stdin the user gets no local password",
    )
    add_user.add_argument(
        "--supervises",
        action="append",
        metavar="Organization/ID",
        help="runs supervisors' reports ($evaluate-measure, /app/supervision) for this organisation and every "
        "program nested in it (repeatable)",
    )
    add_user.set_defaults(func=lambda a: _admin(_users_add(a))(a))
    supervise = user_commands.add_parser("supervise", help="set the organisations a user runs reports for")
    supervise.add_argument("username")
    supervise.add_argument("organizations", nargs="*", metavar="Organization/ID", help="none: no reports")
    supervise.set_defaults(func=lambda a: _admin(_users_supervise(a))(a))
    user_commands.add_parser("list", help="users").set_defaults(func=_admin(_users_list))
    remove_user = user_commands.add_parser("remove", help="delete a user, their sessions and refresh tokens")
    remove_user.add_argument("username")
    remove_user.set_defaults(func=lambda a: _admin(_remove("user", a))(a))

    token = commands.add_parser("token", help="print a short-lived access token for a registered client")
    token.add_argument("--client-id", required=True)
    token.add_argument("--scope", required=True, help='e.g. "system/*.rs"')
    token.add_argument("--patient", help="confine patient/ scopes to this patient id")
    token.add_argument("--lifetime", type=int, default=300, help="seconds (at most 3600)")
    token.add_argument(
        "--base-url", default="http://127.0.0.1:8000", help="server origin when FHIR_SERVER_PUBLIC_URL is not set"
    )
    token.set_defaults(func=lambda a: _admin(_token(a))(a))

    keys = commands.add_parser("keys", help="token-signing keys").add_subparsers(dest="keys_command", required=True)
    keys.add_parser("rotate", help="start signing with a new key").set_defaults(func=_admin(_keys_rotate))
    new_secret = keys.add_parser("new-secret", help="make a secret key for FHIR_SERVER_SECRET_KEY (or a key file)")
    new_secret.add_argument("--file", help="write it to this new file (owner-only) instead of printing it")
    new_secret.add_argument(
        "--unless-configured", action="store_true", help="do nothing when a secret key is configured already"
    )
    new_secret.set_defaults(func=_keys_new_secret)
    keys.add_parser(
        "rotate-secret",
        help="re-encrypt every stored secret under FHIR_SERVER_SECRET_KEY (reads FHIR_SERVER_SECRET_KEY_PREVIOUS too)",
    ).set_defaults(func=_admin(_keys_rotate_secret))
