"""Database failures as client answers: busy, locked, down or full is a 503 with Retry-After, never a 500."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fhir_server.errors import FhirError, service_unavailable

# The exception classes the app maps to 503s (registered as specific handlers, so the connection stays open).
DATABASE_ERRORS: tuple[type[Exception], ...] = (DBAPIError, PoolTimeout)


def classify_database_error(exc: BaseException) -> FhirError | None:
    if isinstance(exc, PoolTimeout):
        return service_unavailable("All database connections are busy; try again shortly", "transient")
    if not isinstance(exc, DBAPIError):
        return None
    message = str(getattr(exc, "orig", exc)).lower()
    if "locked" in message or "busy" in message or "lock timeout" in message or "deadlock" in message:
        return service_unavailable("The database is busy (lock held by another writer); try again", "lock-error")
    if ("disk" in message and "full" in message) or "no space" in message or "could not extend" in message:
        return service_unavailable("The database is out of storage", "no-store", retry_after=30)
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return service_unavailable("The database is unavailable; try again shortly", "transient", retry_after=5)
    return None
