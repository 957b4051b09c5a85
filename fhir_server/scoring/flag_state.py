"""Ending a Flag scoring raised: one way for every rule (a session no longer raising it, a later session resolving
or superseding it, a re-stated concordance gap under its margins)."""

from __future__ import annotations

from fhir_server import fhirjson
from fhir_server.scoring.history import ScoringSession
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
        flag["period"] = {**flag.get("period", {}), "end": when}
    return session.rewrite(current, flag).stored
