"""Database failures as client answers: busy, locked, down or full is a 503 with Retry-After, never a 500."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fhir_server.errors import FhirError, service_unavailable

try:  # the PostgreSQL driver is the optional extra ``postgres``: a SQLite-only install has no psycopg
    import psycopg

    _DRIVER_ERRORS: tuple[type[Exception], ...] = (psycopg.Error, sqlite3.Error)
    _DRIVER_OPERATIONAL: tuple[type[Exception], ...] = (psycopg.OperationalError, sqlite3.OperationalError)
except ImportError:
    _DRIVER_ERRORS, _DRIVER_OPERATIONAL = (sqlite3.Error,), (sqlite3.OperationalError,)

# The exception classes the app maps to 503s (registered as specific handlers, so the connection stays open).
# Driver errors appear unwrapped on the raw read path.
DATABASE_ERRORS: tuple[type[Exception], ...] = (DBAPIError, PoolTimeout, *_DRIVER_ERRORS)


def classify_database_error(exc: BaseException) -> FhirError | None:
    if isinstance(exc, PoolTimeout):
        return service_unavailable("All database connections are busy; try again shortly", "transient")
    if isinstance(exc, _DRIVER_OPERATIONAL):
        return _by_message(str(exc).lower(), exc)
    if not isinstance(exc, DBAPIError):
        return None
    return _by_message(str(getattr(exc, "orig", exc)).lower(), exc)


def _by_message(message: str, exc: BaseException) -> FhirError | None:
    if "locked" in message or "busy" in message or "lock timeout" in message or "deadlock" in message:
        return service_unavailable("The database is busy (lock held by another writer); try again", "lock-error")
    if ("disk" in message and "full" in message) or "no space" in message or "could not extend" in message:
        return service_unavailable("The database is out of storage", "no-store", retry_after=30)
    invalidated = getattr(exc, "connection_invalidated", False)
    if isinstance(exc, (OperationalError, *_DRIVER_OPERATIONAL)) or invalidated:
        return service_unavailable("The database is unavailable; try again shortly", "transient", retry_after=5)
    return None
