"""Command line: ``fhir-server serve | db upgrade | load | reindex | clients | users | token | keys | ehr | outbox |
export | subscriptions | backup | audit``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from fhir_server import logs
from fhir_server.auth.commands import add_auth_commands
from fhir_server.auth.retention import add_commands as add_audit_commands
from fhir_server.backup_command import add_backup_command, run_backup
from fhir_server.cds_hooks.commands import add_cds_commands
from fhir_server.config import Settings
from fhir_server.console import progress_bar
from fhir_server.ehr.admin import add_commands as add_ehr_commands
from fhir_server.export.admin import add_commands as add_export_commands
from fhir_server.subscriptions.admin import add_commands as add_subscription_commands


def _serve(args: argparse.Namespace) -> int:
    from fhir_server import serving

    settings = Settings()
    logs.configure(settings.log_level)
    driver = _driver_problem(settings) or _replica_problem(settings)
    if driver:  # before the migration, which would fail on it with a stack trace
        print(f"fhir-server: not starting: {driver}", file=sys.stderr)
        return 1
    if not args.no_migrate:
        from fhir_server.store.migrate import upgrade

        upgrade(settings.database_url)
    problem = (
        _secret_key_problem(settings)
        or _expunge_problem(settings)
        or _scoring_problem(settings)
        or _validation_problem(settings)
    )
    if problem:
        print(f"fhir-server: not starting: {problem}", file=sys.stderr)
        return 1
    print(f"fhir-server: FHIR base http://{args.host}:{args.port}/fhir  (database: {_redacted(settings.database_url)})")
    if settings.sandbox:
        print(f"fhir-server: sandbox EHR at http://{args.host}:{args.port}/sandbox (demo data; sign in as demo)")
    serving.serve(args.host, args.port, args.workers, log_level="warning", access_log=False)
    return 0


def _driver_problem(settings: Settings) -> str | None:
    """A PostgreSQL URL needs the PostgreSQL driver, the optional extra ``postgres`` (a SQLite-only install has
    none): said in one line with the command that installs it."""
    from fhir_server.store.engine import normalise_url

    if not normalise_url(settings.database_url).startswith("postgresql+psycopg://"):
        return None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return (
            "FHIR_SERVER_DATABASE_URL is a PostgreSQL database but its driver is not installed: "
            "pip install 'fhir-server[postgres]' (or psycopg[binary])"
        )
    return None


def _replica_problem(settings: Settings) -> str | None:
    """FHIR_SERVER_READ_REPLICA_URL beside a database that cannot have one, or not a PostgreSQL URL."""
    from fhir_server.store.replica import replica_problem

    return replica_problem(settings.database_url, settings.read_replica_url)


def _validation_problem(settings: Settings) -> str | None:
    """A rule family in FHIR_SERVER_VALIDATION_WARN_ONLY that does not exist or may not be downgraded."""
    from fhir_server.validation.families import parse_warn_only

    try:
        parse_warn_only(settings.validation_warn_only)
    except ValueError as exc:
        return str(exc)
    return None


def _scoring_problem(settings: Settings) -> str | None:
    """A library that does not load, or a scoring override that names no declared setting or has the wrong type
    (FHIR_SERVER_SCORING_OVERRIDES): said once, before the workers start, instead of a silently ignored setting."""
    from fhir_server.library import LoadError, discover
    from fhir_server.scoring.settings import ScoringSettings, SettingsError

    try:
        library = discover(settings.library_paths(), settings.content_pack_paths())
        ScoringSettings(settings.scoring_overrides, (i.rules for i in library.instruments if i.rules is not None))
    except (LoadError, SettingsError) as exc:
        return str(exc)
    return None


def _secret_key_problem(settings: Settings) -> str | None:
    """Why the stored secrets cannot be used with the configured key (store/secret_store.py), or None.  Checked
    before the workers start, so the operator reads one line instead of a stack trace per worker."""
    from fhir_server.store import secret_store
    from fhir_server.store.crypto import SecretKeyError
    from fhir_server.store.engine import build_engine

    engine = build_engine(settings)
    try:
        print(f"fhir-server: {secret_store.check_at_startup(engine)}")
        return None
    except SecretKeyError as exc:
        return str(exc)
    finally:
        engine.dispose()


def _expunge_problem(settings: Settings) -> str | None:
    """$expunge names an erased patient in the audit trail by a pseudonym keyed with the secret key: enabled
    without one, every erasure would fail, so the server says so at start instead."""
    from fhir_server.store.crypto import keyring_from_settings

    if settings.expunge_enabled and not keyring_from_settings(settings).configured:
        return (
            "FHIR_SERVER_EXPUNGE_ENABLED=true needs the secret key (FHIR_SERVER_SECRET_KEY or _FILE): erasures name "
            "the erased patient in the audit trail by a pseudonym made with it"
        )
    return None


def _db_upgrade(_: argparse.Namespace) -> int:
    from fhir_server.store.migrate import upgrade

    settings = Settings()
    upgrade(settings.database_url)
    print(f"database at {_redacted(settings.database_url)} is at the latest schema")
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from fhir_server.engine.composition import build_core
    from fhir_server.store.reindex import reindex

    core = build_core(Settings())
    core.fhir.custom.refresh_if_stale()  # include the SearchParameter resources stored so far
    started = time.monotonic()
    try:
        count = reindex(
            core.engine,
            core.repository.indexer,
            resource_type=args.type,
            on_progress=lambda done, total: progress_bar("reindexing", done, total),
        )
    finally:
        core.close()
    print(f"re-indexed {count} resources in {time.monotonic() - started:.1f} s")
    return 0


def _load(args: argparse.Namespace) -> int:
    """Library folders and files, and FHIR packages (``.tgz`` or unpacked): everything is read and checked before
    the first write, so a broken file stores nothing; packages are stored first, as the library's resources may
    use their extensions and profiles."""
    from fhir_server.engine.composition import build_core
    from fhir_server.engine.library_sync import sync_resources
    from fhir_server.library import LoadError, discover
    from fhir_server.library.packages import is_package, read_package, store_package

    settings = Settings(load_library=False)
    paths = [Path(p) for p in args.paths]
    folders = [p for p in paths if not is_package(p)]
    try:
        packages = [read_package(p) for p in paths if is_package(p)]
        library = (
            discover(folders, [Path(p) for p in args.content_pack or []]) if folders or args.content_pack else None
        )
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    core = build_core(settings)
    try:
        for package in packages:
            summary = store_package(
                core.fhir, package, lambda done, total, label=package.label: progress_bar(label, done, total)
            )
            print(
                f"{package.label}: {summary.created} stored, {summary.unchanged} already current, "
                f"{package.skipped} skipped (examples, other types)"
            )
        if library is not None:
            resources = library.resources()
            summary = sync_resources(core.fhir, resources, lambda done, total: progress_bar("loading", done, total))
            print(f"{summary.created} resources stored, {summary.unchanged} already current ({len(resources)} files)")
    except LoadError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    finally:
        core.close()
    return 0


def _redacted(url: str) -> str:
    """Never print a database password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
    return url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhir-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="migrate the database and start the server")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    serve.add_argument("--no-migrate", action="store_true", help="do not run database migrations first")
    serve.set_defaults(func=_serve)

    load = commands.add_parser(
        "load", help="store instrument folders, terminology files, content packs or FHIR packages (IGs)"
    )
    load.add_argument(
        "paths",
        nargs="+",
        help="a questionnaires/ or terminology/ folder, an instrument folder or file, a FHIR package .tgz "
        "or an unpacked package folder (holding package/package.json, or as npm installs one)",
    )
    load.add_argument("--content-pack", action="append", help="a content pack folder to apply (repeatable)")
    load.set_defaults(func=_load)

    reindex = commands.add_parser("reindex", help="rebuild the search index (after adding SearchParameters)")
    reindex.add_argument("--type", help="only this resource type")
    reindex.set_defaults(func=_reindex)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply every pending migration").set_defaults(func=_db_upgrade)
    add_auth_commands(commands)
    add_cds_commands(commands)
    add_ehr_commands(commands)  # ehr add|list|remove, outbox list|retry
    add_export_commands(commands)  # export list|cancel
    add_subscription_commands(commands)  # subscriptions list|retry
    add_backup_command(commands)  # backup DEST
    add_audit_commands(commands)  # audit prune
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # serve migrates unless told not to; backup copies the database as it is (never migrated first, and on
    # PostgreSQL it does not connect); the others need a current schema
    if args.func not in (_serve, _db_upgrade, run_backup):
        from fhir_server.store.migrate import migration_problem

        settings = Settings()
        problem = _driver_problem(settings) or _replica_problem(settings) or migration_problem(settings.database_url)
        if problem:
            print(f"fhir-server {args.command}: {problem} ({_redacted(settings.database_url)})", file=sys.stderr)
            return 1
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
