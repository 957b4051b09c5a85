"""What one report counts: whose sessions (``Scope``, from reporting/access.py) and when (``Window``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Scope:
    """Whose sessions: None is everyone's; a set keeps members attributed to one of its references."""

    programs: frozenset[str] | None = None
    clinicians: frozenset[str] | None = None


@dataclass(frozen=True)
class Window:
    start: datetime  # inclusive, naive UTC
    end: datetime  # exclusive
    dropout_days: int = 30  # the site's FHIR_SERVER_DROPOUT_DAYS
