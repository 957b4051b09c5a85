"""What a parsed search value asks of the index, independent of SQL (the store translates these)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class TokenMatch:
    system: str | None  # None: any system; "" : no system
    code: str | None  # None: any code (``system|``)
    text: str | None = None  # :text search on display/text (lower-cased prefix)


@dataclass(frozen=True)
class StringMatch:
    value: str
    mode: str  # "starts" | "exact" | "contains"


@dataclass(frozen=True)
class DateMatch:
    prefix: str  # eq ne gt lt ge le sa eb ap
    low: datetime
    high: datetime


@dataclass(frozen=True)
class NumberMatch:
    prefix: str
    value: float
    low: float  # the range implied by the value's precision
    high: float
    system: str | None = None  # quantity only
    code: str | None = None


@dataclass(frozen=True)
class ReferenceMatch:
    target_type: str | None
    target_id: str | None
    url: str | None = None  # absolute or canonical
    version: str | None = None
    # ``:below`` on a canonical: the version given and those beneath it (``|1`` is 1, 1.2, 1.2.3; not 10).
    version_below: bool = False


@dataclass(frozen=True)
class UriMatch:
    value: str
    mode: str = "eq"  # "eq" | "below" | "above"
    version: str | None = None  # ``url|version``: a canonical resource's url and version (``:below``: beneath it)


@dataclass(frozen=True)
class MissingMatch:
    missing: bool


Condition = TokenMatch | StringMatch | DateMatch | NumberMatch | ReferenceMatch | UriMatch | MissingMatch
