"""Required bindings: fhir.resources accepts any code (``Observation.status = "done"``); R4 does not.

The code lists come from the R4 specification (``data/required_bindings.json``, keyed by element path such as
``Observation.status`` or ``Identifier.use``).  The strict walk (``strict.py``) checks them, with the JSON types,
in its one pass over the resource; ``elements.py`` looks each element's codes up once per process.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import orjson


@cache
def _bindings() -> dict[str, frozenset[str]]:
    raw = orjson.loads(resources.files("fhir_server.validation").joinpath("data/required_bindings.json").read_bytes())
    # Abstract codes (e.g. Questionnaire.item.type 'question') are in the value set but may not be used.
    return {
        path: frozenset(spec["codes"]) - frozenset(spec.get("notSelectable", ()))
        for path, spec in raw.items()
        if not path.startswith("_")
    }


def required_codes(element_path: str) -> frozenset[str] | None:
    """The codes a required binding allows at ``element_path`` (e.g. ``Patient.gender``), None when unbound."""
    return _bindings().get(element_path)
