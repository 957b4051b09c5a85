"""What CLI commands print while they work (on stderr, so their stdout stays the result), and how one that needs
the database reports its refusal."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def bar(done: int, total: int, width: int = 32) -> str:
    """``[########........]``: how much of ``total`` is done."""
    filled = width if not total else int(width * min(done, total) / total)
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def progress_bar(label: str, done: int, total: int, width: int = 32) -> None:
    end = "\n" if done >= total else ""
    print(f"\r{label} {bar(done, total, width)} {done}/{total}", end=end, file=sys.stderr, flush=True)


def database_command(
    command: Callable[[argparse.Namespace, Any], int], expected: tuple[type[Exception], ...] = ()
) -> Callable[[argparse.Namespace], int]:
    """A CLI command run with an engine on the configured database: the database's refusal, or one of the
    ``expected`` errors, becomes one clear line on stderr and exit status 1 (never a traceback)."""
    from fhir_server.config import Settings
    from fhir_server.store.engine import build_engine
    from fhir_server.store.errors import DATABASE_ERRORS

    def run(args: argparse.Namespace) -> int:
        engine = build_engine(Settings())
        try:
            return command(args, engine)
        except expected as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except DATABASE_ERRORS as exc:
            print(
                f"error: the database refused the command ({type(exc).__name__}); "
                "is it reachable and migrated (fhir-server db upgrade)?",
                file=sys.stderr,
            )
            return 1
        finally:
            engine.dispose()

    return run
