"""FHIR date, dateTime and instant values as the [low, high] range their precision implies (naive UTC).

``2026-03`` covers 2026-03-01T00:00:00 … 2026-03-31T23:59:59.999999, so ``date=2026-03`` matches the last second
of March and not the first of April.  Values without a time zone are taken as UTC.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta
from functools import lru_cache

_PATTERN = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_TICK = timedelta(microseconds=1)
MIN_DATE = datetime(1, 1, 1)
MAX_DATE = datetime(9999, 12, 31, 23, 59, 59, 999999)


class DateFormatError(ValueError):
    pass


def parse_range(text: str) -> tuple[datetime, datetime]:
    """The inclusive range a FHIR date/dateTime/instant covers.  Raises DateFormatError."""
    if not isinstance(text, str):
        raise DateFormatError(f"'{str(text)[:40]}' is not a FHIR date, dateTime or instant")
    return _parse_range(text)


# Cached: a write indexes the same few dates many times (a response's authored is its Observation's effective,
# its Flags' period start and its Provenance's recorded), and a search repeats its bounds.
@lru_cache(maxsize=4096)
def _parse_range(text: str) -> tuple[datetime, datetime]:
    match = _PATTERN.fullmatch(text.strip())
    if not match:
        raise DateFormatError(f"'{str(text)[:40]}' is not a FHIR date, dateTime or instant")
    g = match.groupdict()
    try:
        year = int(g["y"])
        if g["m"] is None:
            return datetime(year, 1, 1), datetime(year, 12, 31, 23, 59, 59, 999999)
        month = int(g["m"])
        if g["d"] is None:
            last = calendar.monthrange(year, month)[1]
            return datetime(year, month, 1), datetime(year, month, last, 23, 59, 59, 999999)
        day = int(g["d"])
        if g["H"] is None:
            start = datetime(year, month, day)
            return start, start + timedelta(days=1) - _TICK
        fraction = (g["f"] or "")[:6]
        micro = int(fraction.ljust(6, "0")) if fraction else 0
        start = datetime(year, month, day, int(g["H"]), int(g["M"]), int(g["S"] or 0), micro)
        if g["tz"] and g["tz"] != "Z":
            sign = 1 if g["tz"][0] == "+" else -1
            hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
            if hours > 14 or minutes > 59:
                raise DateFormatError(f"'{text[:40]}' has an invalid time zone offset")
            start -= sign * timedelta(hours=hours, minutes=minutes)
        if g["S"] is None:
            width = timedelta(minutes=1)
        elif g["f"]:
            width = timedelta(microseconds=10 ** (6 - len(fraction)))
        else:
            width = timedelta(seconds=1)
        return start, start + width - _TICK
    except ValueError as exc:
        raise DateFormatError(f"'{text[:40]}' is not a valid date: {exc}") from None


def parse_instant(text: str) -> datetime:
    """A point in time (``_since``, ``If-Modified-Since`` style parameters): the range's start."""
    return parse_range(text)[0]


def parse_http_date(text: str) -> datetime | None:
    try:
        return datetime.strptime(text.strip(), "%a, %d %b %Y %H:%M:%S GMT")
    except ValueError:
        return None
