"""``appContext``: what a CDS Hooks card's SMART link asks the app to open (CDS Hooks 2.0, Link: the EHR passes the
link's ``appContext`` to the app "as part of the OAuth 2.0 access token response", field ``appContext``, a string).

Our cards (fhir_server/cds_hooks/cards.py) send ``{"view":"clinician","flag":"Flag/<id>"}`` for a concern and
``{"view":"form","measure":"ors"}`` for a measure not yet collected.  ``read_app_context`` checks such a value
against what the app offers and returns only what is valid; anything else is ignored with a warning on the
``fhir_server.smart`` logger (never the token response, never patient data: only key names, view and measure names
and Flag ids, and only when they look like names), and the launch goes on as without it.

- Not JSON (or longer than ``MAX_CHARS``), not an object, an unknown ``view``: the whole appContext is ignored (what
  the other keys mean depends on the view).
- An unknown key: that key is ignored (a newer card may say more than this app understands).
- ``measure``: only with the form view; a name or canonical ``resolve_measure`` knows, else ignored.
- ``flag``: only with the clinician view; ``Flag/<FHIR id>``, else ignored.

Without ``view`` the keys are checked against the view the launch URL asked for.  A launch of the supervision page
ignores any appContext: it is no patient's, and its token was asked for reports, not for a form or a chart.  So
does a launch of the therapist's rating (``view=therapist-rating``): its form is the library's clinician-rated
instrument, never a measure a card names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_server.smart.submission import MeasureUnavailable

log = logging.getLogger("fhir_server.smart")

CONTEXT_VIEWS = ("form", "clinician")  # what a CDS card's appContext may open
VIEWS = (*CONTEXT_VIEWS, "supervision", "therapist-rating")  # what a launch URL's ``view`` may open
KEYS = frozenset({"view", "measure", "flag"})
MAX_CHARS = 4096  # our cards' contexts are a few dozen characters; an EHR allows 4 KB on its launches
FLAG = re.compile(r"Flag/([A-Za-z0-9\-.]{1,64})")
_LOGGABLE = re.compile(r"[A-Za-z0-9_.:/|\-]{1,100}")  # names and ids; no spaces, so no one's name in a log line


@dataclass(frozen=True)
class AppContext:
    """The valid part of an appContext; all None when there was none, or nothing valid in it."""

    view: str | None = None  # form | clinician (never supervision)
    measure: str | None = None  # the canonical url|version of the measure the form shows
    flag: str | None = None  # the id of the Flag the clinician view points at


def read_app_context(value: Any, *, launch_view: str, resolve_measure: Callable[[str], str]) -> AppContext:
    """``value`` as the token response has it (a JSON string; a JSON object as some EHRs send is taken as is).
    ``launch_view`` is the view of the launch URL; ``resolve_measure`` turns a measure name into a canonical,
    raising ``MeasureUnavailable`` for one this server does not know."""
    if value is None:
        return AppContext()
    if launch_view not in CONTEXT_VIEWS:
        log.warning("appContext ignored: the %s view takes none", _shown(launch_view))
        return AppContext()
    data = _parsed(value)
    if data is None:
        return AppContext()
    unknown = sorted(str(key) for key in set(data) - KEYS)
    if unknown:
        log.warning("appContext: unknown keys ignored: %s", _shown_all(unknown))
    view = data.get("view")
    if view is not None and view not in CONTEXT_VIEWS:
        log.warning("appContext ignored: unknown view %s", _shown(view))
        return AppContext()
    shown = view or launch_view
    return AppContext(
        view=view,
        measure=_measure(data.get("measure"), shown, resolve_measure) if "measure" in data else None,
        flag=_flag(data.get("flag"), shown) if "flag" in data else None,
    )


def _parsed(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        if len(value) > MAX_CHARS:
            log.warning("appContext ignored: longer than %d characters", MAX_CHARS)
            return None
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            log.warning("appContext ignored: not JSON")
            return None
        if not isinstance(value, dict):
            log.warning("appContext ignored: a JSON %s, not an object", _kind(value))
            return None
        return value
    if isinstance(value, dict):
        if len(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)) > MAX_CHARS:
            log.warning("appContext ignored: longer than %d characters", MAX_CHARS)
            return None
        return value
    log.warning("appContext ignored: a JSON %s, neither a string nor an object", _kind(value))
    return None


def _measure(measure: Any, view: str, resolve_measure: Callable[[str], str]) -> str | None:
    if view != "form":
        log.warning("appContext: measure ignored: only the form view shows a measure (view %s)", view)
        return None
    if not isinstance(measure, str) or not 0 < len(measure) <= 200:
        log.warning("appContext: measure ignored: %s is not a measure name", _shown(measure))
        return None
    try:
        return resolve_measure(measure)
    except MeasureUnavailable:
        log.warning("appContext: measure ignored: no measure %s here", _shown(measure))
        return None


def _flag(flag: Any, view: str) -> str | None:
    if view != "clinician":
        log.warning("appContext: flag ignored: only the clinician view shows Flags (view %s)", view)
        return None
    found = FLAG.fullmatch(flag) if isinstance(flag, str) else None
    if found is None:
        log.warning("appContext: flag ignored: %s is not Flag/<id>", _shown(flag))
        return None
    return found.group(1)


def _shown(value: Any) -> str:
    """A value for a log line: quoted when it looks like a name or an id, else only what kind of value it is."""
    if isinstance(value, str):
        return repr(value) if _LOGGABLE.fullmatch(value) else "(a string of other characters)"
    return f"(a JSON {_kind(value)})"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    kinds = {str: "string", int: "number", float: "number", list: "array", dict: "object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _shown_all(keys: list[str]) -> str:
    named = [repr(k) for k in keys[:10] if _LOGGABLE.fullmatch(k)]
    others = len(keys) - len(named)
    return ", ".join(named + ([f"{others} more"] if others else []))
