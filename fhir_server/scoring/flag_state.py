"""Ending a Flag scoring raised: one way for every rule (a session no longer raising it, a later session resolving
or superseding it, a re-stated concordance gap under its margins)."""

from __future__ import annotations

from typing import Any

from fhir_server import fhirjson
from fhir_server.scoring.history import ScoringSession
from fhir_server.search.fhirdate import DateFormatError, parse_range
from fhir_server.store.records import Stored


def end_flag(session: ScoringSession, flag_id: str, when: str | None, status: str = "inactive") -> Stored | None:
    """The Flag ``flag_id``, if active, ended ``when`` (read with a lock: the write checks the version)."""
    current = session.current("Flag", flag_id, lock=True)
    return None if current is None else close_flag(session, current, when, status)


def close_flag(session: ScoringSession, current: Stored, when: str | None, status: str = "inactive") -> Stored | None:
    """``current`` ended ``when`` with ``status``; None when it is not an active Flag (nothing written)."""
    if current.deleted:
        return None
    flag = fhirjson.loads_stored(current.content or "{}")
    if flag.get("status") != "active":
        return None
    flag["status"] = status
    if when:
        flag["period"] = period_ended(flag.get("period"), when)
    return session.rewrite(current, flag).stored


def period_ended(period: dict[str, Any] | None, when: str) -> dict[str, Any]:
    """``period`` closed at ``when``, or at its own start when that is later: a Flag raised by a session dated
    ahead of this server's clock (an EHR's clock, a time zone typed wrong) ends as it starts, never before it
    (per-1: a Period does not end before it starts; the write would be refused)."""
    ended = dict(period or {})
    start = ended.get("start")
    try:
        if isinstance(start, str) and parse_range(when)[0] < parse_range(start)[0]:
            when = start
    except DateFormatError:  # a start this server did not write: the end stays the instant given
        pass
    ended["end"] = when
    return ended
