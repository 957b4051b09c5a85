"""What scoring reads and writes, as scoring's own interface: the pipeline depends on these Protocols and types
only, and store/ implements them (``store.session.WriteSession``, over the fixed statements of store/clinical.py).

The reads are asked per rater series (a client's own ratings, and each other respondent's): the series' newest few
results of one measure and its first (intake), its active Flags with the instrument's codes and, when age
matters, the Patient.  Each is one range of the clinical series index (scoring/series_index.py), so none grows
with the client's history.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from fhir_server.store.records import Stored, WriteResult


@dataclass(frozen=True, slots=True)
class ScoringContext:
    history: list[Stored]  # newest first: the series' newest ``limit`` sessions and its first
    active_flags: list[Stored]
    patient: Stored | None


Measure = tuple[str, str, str, datetime, int, bool]
"""system, code, rater series, effective before, how many of the newest, whether the first (intake) too."""
ActiveFlags = tuple[str, list[str], str]
"""system, codes, rater series."""
ScoringRead = tuple[tuple[str, str], Measure | None, ActiveFlags | None, str | None]
"""What ``ClinicalHistory.scoring_context`` is asked: (subject, measure, flags, patient_id)."""


class ClinicalHistory(Protocol):
    """Scoring's reads of a client's earlier results, inside the write transaction that scores a response (so
    they see what that transaction wrote before them)."""

    def scoring_context(
        self,
        subject: tuple[str, str],
        measure: Measure | None,
        flags: ActiveFlags | None,
        patient_id: str | None,
    ) -> ScoringContext:
        """One rater series' earlier results of a measure (the newest few and the first), its active Flags with
        one of these codes and, when ``patient_id`` is given, that Patient."""
        ...

    def encounter_results(
        self, encounter_id: str, known: Collection[str] = (), *, lock: str | None = None
    ) -> list[Stored]:
        """The current Observations of one session (``Encounter/{encounter_id}``), whoever rated; this
        transaction's own included, except perhaps those ``known`` by id (the caller's, just written).  ``lock``:
        read once no other transaction holds this key, and hold it until this one ends (two ratings of one session
        scored at once: the second sees the first)."""
        ...


class ScoringSession(ClinicalHistory, Protocol):
    """The write transaction as the pipeline uses it: its reads, and the versioned writes of what it derives."""

    @property
    def now(self) -> datetime: ...

    def current(self, resource_type: str, resource_id: str, *, lock: bool = False) -> Stored | None: ...

    def peek(self, resource_type: str, resource_id: str) -> Stored | None: ...

    def create(self, resource: dict[str, Any], resource_id: str) -> WriteResult: ...

    def rewrite(self, current: Stored, resource: dict[str, Any]) -> WriteResult: ...

    def update(
        self,
        resource: dict[str, Any],
        resource_id: str,
        *,
        if_match: int | None = None,
        method: str = "PUT",
        skip_unchanged: bool = False,
    ) -> WriteResult: ...
