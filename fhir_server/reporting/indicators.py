"""Indicators in the library: a folder holding ``measure.json`` (the FHIR Measure, served at ``/Measure``) and
``indicator.json`` (how each of its groups is counted, reporting/definitions.py), checked against each other and
against the instruments' scoring rules when the library loads — a group, population or stratifier the Measure
declares and the definition does not count (or the reverse), or a code no instrument scores, is a load error
naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_server.reporting.definitions import Definition, DefinitionError, load_definition

STRATA = "http://fit-fhir.org/fhir/CodeSystem/fit-indicators"


class IndicatorError(ValueError):
    """An indicator folder the library cannot load, naming the file (library/discover.py reports it)."""


@dataclass(frozen=True)
class Indicator:
    id: str
    folder: Path
    measure: dict[str, Any]
    definition: Definition

    @property
    def url(self) -> str:
        return self.measure["url"]

    @property
    def version(self) -> str:
        return self.measure["version"]


def read_indicator(folder: Path, measure: dict[str, Any]) -> Indicator:
    """``measure``: measure.json already read and validated as a FHIR resource."""
    path = folder / "indicator.json"
    if measure.get("resourceType") != "Measure":
        raise IndicatorError(f"{folder / 'measure.json'}: must hold a Measure")
    try:
        definition = load_definition(path)
    except DefinitionError as exc:
        raise IndicatorError(str(exc)) from None
    if definition.measure != measure.get("url"):
        raise IndicatorError(f"{path}: 'measure' must be {measure.get('url')}")
    _check_groups(path, measure, definition)
    return Indicator(folder.name, folder, measure, definition)


def _check_groups(path: Path, measure: dict[str, Any], definition: Definition) -> None:
    groups = measure.get("group") or []
    declared_groups = [_code(g.get("code")) for g in groups]
    if declared_groups != [g.code for g in definition.groups]:
        raise IndicatorError(f"{path}: groups must be the Measure's, in its order: {declared_groups}")
    scoring = {g.scoring for g in definition.groups}
    declared = _code(measure.get("scoring"))
    if len(scoring) != 1 or declared not in scoring:
        every = ", ".join(sorted(scoring))
        raise IndicatorError(f"{path}: the Measure's scoring ({declared}) must be every group's ({every})")
    for group, counted in zip(groups, definition.groups, strict=True):
        populations = [_code(p.get("code")) for p in group.get("population") or []]
        if populations != list(counted.populations):
            raise IndicatorError(
                f"{path}: group {counted.code}: the Measure must declare the populations "
                f"{', '.join(counted.populations)} in that order (it declares {', '.join(map(str, populations))})"
            )
        strata = [_code(s.get("code")) for s in group.get("stratifier") or []]
        if strata != list(definition.stratifiers):
            wanted = ", ".join(definition.stratifiers)
            raise IndicatorError(f"{path}: group {counted.code}: the Measure's stratifiers must be {wanted}")


def check_codes(indicators: list[Indicator], scored: set[str]) -> None:
    """Every code an indicator counts is one an instrument of the library scores."""
    for indicator in indicators:
        for group in indicator.definition.groups:
            unknown = sorted(group.codes() - scored)
            if unknown:
                raise IndicatorError(
                    f"{indicator.folder / 'indicator.json'}: group {group.code}: no instrument scores "
                    f"{', '.join(unknown)}"
                )


def _code(concept: Any) -> str | None:
    coding = concept.get("coding") if isinstance(concept, dict) else None
    first = coding[0] if isinstance(coding, list) and coding and isinstance(coding[0], dict) else {}
    return first.get("code")
