"""Plain records passed between the store and the API (no SQLAlchemy types leak out of store/)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class Stored:
    """One version of a resource as stored.  ``content`` is the served JSON; None for a deletion."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime  # naive UTC
    deleted: bool
    content: str | None
    method: str = "PUT"

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def last_updated_iso(self) -> str:
        return instant(self.last_updated)

    @property
    def http_date(self) -> str:
        """RFC 9110's IMF-fixdate, in English whatever the process's locale (strftime's %a and %b are not)."""
        t = self.last_updated
        return (
            f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT"
        )


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: Stored
    created: bool  # True → 201 Created
    # Set when a conditional create matched an existing resource, or a write changed nothing.
    existing: bool = False
    # Information for the client about what the write did (a scored form given outside its ages).
    notes: tuple[str, ...] = ()
    # The validator's warnings about the written content (OperationOutcome issues as JSON)
    warnings: tuple[dict[str, Any], ...] = ()


def utc_now() -> datetime:
    """Now, naive UTC, truncated to milliseconds so the wire value and the stored value are equal."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@lru_cache(maxsize=1024)  # a write stamps all its resources with one time
def instant(value: datetime) -> str:
    """FHIR instant with millisecond precision and an explicit offset."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+00:00"
