"""A client's alliance and outcome at a glance: score series per measure, the latest session's items against
the previous session's, and the active Flags with their follow-up questions.  One query path for the clinician
view, CDS Hooks cards and the $alliance-summary operation."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhir_server.canonical import MEASURES_CODESYSTEM
from fhir_server.scoring import texts
from fhir_server.scoring.resources import SERIES_CODE, series_of


@dataclass
class Point:
    date: str
    value: Decimal
    observation: str  # Observation/<id>
    interpretation: list[str] = field(default_factory=list)
    flagged: bool = False
    response: str | None = None  # QuestionnaireResponse/<id> the score was derived from


@dataclass
class ItemChange:
    code: str
    display: str
    latest: Decimal
    previous: Decimal | None


@dataclass
class MeasureSeries:
    code: str  # the total/subscale code in fit-measures (srs-total, ors-total, ...)
    display: str
    series: str  # respondent series ("self", "other:mother")
    points: list[Point] = field(default_factory=list)
    items: list[ItemChange] = field(default_factory=list)
    subscores: dict[str, list[tuple[str, Decimal]]] = field(default_factory=dict)  # code → [(date, value)]

    @property
    def latest(self) -> Point | None:
        return self.points[-1] if self.points else None

    @property
    def trend(self) -> str:
        if len(self.points) < 2:
            return "single"
        change = self.points[-1].value - self.points[-2].value
        return "rising" if change > 0 else "falling" if change < 0 else "steady"

    @property
    def rater(self) -> str:
        """'' for the client's own ratings, else who rated ('mother')."""
        return texts.rater(self.series)

    @property
    def lowest_item(self) -> ItemChange | None:
        return min(self.items, key=lambda i: i.latest) if self.items else None


@dataclass
class ActiveFlag:
    id: str
    code: str
    display: str
    message: str
    priority: str
    since: str | None
    observation: str | None
    series: str = "self"  # who rated ("self", "other:mother")

    @property
    def rater(self) -> str:
        """'' for the client's own rating, else who rated ('mother')."""
        return texts.rater(self.series)


@dataclass
class AllianceSummary:
    patient: str
    measures: list[MeasureSeries]
    flags: list[ActiveFlag]

    def measure(self, code: str, series: str = "self") -> MeasureSeries | None:
        return next((m for m in self.measures if m.code == code and m.series == series), None)


def _coding(element: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in element.get("coding", []) if c.get("system") == MEASURES_CODESYSTEM), {})


def build_summary(patient: str, observations: list[dict[str, Any]], flags: list[dict[str, Any]]) -> AllianceSummary:
    """``observations`` oldest first (scored survey Observations); ``flags`` the patient's active Flags."""
    flagged = {_flag_detail(f) for f in flags}
    measures: dict[tuple[str, str], MeasureSeries] = {}
    previous_items: dict[tuple[str, str], dict[str, Decimal]] = {}
    for observation in observations:
        coding = _coding(observation.get("code", {}))
        if not coding or not _number(observation.get("valueQuantity")):
            continue  # not a score (or, from an EHR's prefetch, not one this summary can read)
        series = series_of(observation)
        key = (coding["code"], series)
        measure = measures.setdefault(key, MeasureSeries(coding["code"], coding.get("display", coding["code"]), series))
        reference = f"Observation/{observation['id']}"
        measure.points.append(
            Point(
                observation.get("effectiveDateTime", ""),
                Decimal(str(observation["valueQuantity"]["value"])),
                reference,
                [i.get("text", "") for i in observation.get("interpretation", [])],
                reference in flagged,
                _derived_from(observation),
            )
        )
        items: dict[str, tuple[str, Decimal]] = {}
        for component in observation.get("component", []):
            component_coding = _coding(component.get("code", {}))
            if component_coding.get("code") == SERIES_CODE or not _number(component.get("valueQuantity")):
                continue
            value = Decimal(str(component["valueQuantity"]["value"]))
            if component_coding.get("code", "").endswith(("-sum", "-mean")):
                measure.subscores.setdefault(component_coding["code"], []).append((measure.points[-1].date, value))
            else:
                items[component_coding.get("code", "")] = (component_coding.get("display", ""), value)
        before = previous_items.get(key, {})
        measure.items = [ItemChange(code, display, value, before.get(code)) for code, (display, value) in items.items()]
        previous_items[key] = {code: value for code, (_, value) in items.items()}
    active = [_active_flag(f) for f in flags]
    return AllianceSummary(patient, sorted(measures.values(), key=lambda m: (m.code, m.series)), active)


def _number(quantity: Any) -> bool:
    value = quantity.get("value") if isinstance(quantity, dict) else None
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _derived_from(observation: dict[str, Any]) -> str | None:
    for reference in observation.get("derivedFrom", []):
        if str(reference.get("reference", "")).startswith("QuestionnaireResponse/"):
            return reference["reference"]
    return None


def _flag_detail(flag: dict[str, Any]) -> str | None:
    for extension in flag.get("extension", []):
        if extension.get("url") == "http://hl7.org/fhir/StructureDefinition/flag-detail":
            return extension.get("valueReference", {}).get("reference")
    return None


def _active_flag(flag: dict[str, Any]) -> ActiveFlag:
    coding = (flag.get("code", {}).get("coding") or [{}])[0]
    priority = next(
        (
            e["valueCodeableConcept"]["coding"][0]["code"]
            for e in flag.get("extension", [])
            if e.get("url") == "http://hl7.org/fhir/StructureDefinition/flag-priority"
        ),
        "PN",
    )
    return ActiveFlag(
        flag["id"],
        coding.get("code", ""),
        coding.get("display", ""),
        flag.get("code", {}).get("text", ""),
        priority,
        flag.get("period", {}).get("start"),
        _flag_detail(flag),
        series_of(flag),
    )


def latest_flags(flags: list[ActiveFlag]) -> list[tuple[ActiveFlag, int]]:
    """One entry per kind of concern and rater: its most recent active Flag and how many earlier active ones
    there are (none since a session supersedes its series' earlier Flag of the same rule; Flags written before
    that could still be open together).  Another rater's concern is its own entry, never merged with the
    client's."""
    groups: dict[tuple[str, str], list[ActiveFlag]] = {}
    for flag in flags:
        groups.setdefault((flag.code, flag.series), []).append(flag)
    latest = []
    for group in groups.values():
        group.sort(key=lambda f: f.since or "", reverse=True)
        latest.append((group[0], len(group) - 1))
    return sorted(latest, key=lambda entry: entry[0].since or "", reverse=True)


def to_parameters(summary: AllianceSummary) -> dict[str, Any]:
    """The summary as a FHIR Parameters resource ($alliance-summary)."""
    parameters: list[dict[str, Any]] = [{"name": "patient", "valueReference": {"reference": summary.patient}}]
    for measure in summary.measures:
        parts: list[dict[str, Any]] = [
            {
                "name": "code",
                "valueCoding": {"system": MEASURES_CODESYSTEM, "code": measure.code, "display": measure.display},
            },
            {"name": "series", "valueString": measure.series},
            {"name": "trend", "valueCode": measure.trend},
        ]
        if measure.latest:
            parts.append({"name": "latest", "valueReference": {"reference": measure.latest.observation}})
        for point in measure.points:
            parts.append(
                {
                    "name": "point",
                    "part": [
                        {"name": "date", "valueDateTime": point.date},
                        {"name": "value", "valueDecimal": float(point.value)},
                        {"name": "observation", "valueReference": {"reference": point.observation}},
                        {"name": "flagged", "valueBoolean": point.flagged},
                    ],
                }
            )
        for item in measure.items:
            item_parts = [
                {
                    "name": "code",
                    "valueCoding": {"system": MEASURES_CODESYSTEM, "code": item.code, "display": item.display},
                },
                {"name": "latest", "valueDecimal": float(item.latest)},
            ]
            if item.previous is not None:
                item_parts.append({"name": "previous", "valueDecimal": float(item.previous)})
            parts.append({"name": "item", "part": item_parts})
        parameters.append({"name": "measure", "part": parts})
    for flag in summary.flags:
        flag_parts = [
            {"name": "flag", "valueReference": {"reference": f"Flag/{flag.id}"}},
            {"name": "code", "valueCode": flag.code},
            {"name": "message", "valueString": flag.message},
            {"name": "priority", "valueCode": flag.priority},
            {"name": "series", "valueString": flag.series},
        ]
        if flag.since:
            flag_parts.append({"name": "since", "valueDateTime": flag.since})
        if flag.observation:
            flag_parts.append({"name": "observation", "valueReference": {"reference": flag.observation}})
        parameters.append({"name": "active-flag", "part": flag_parts})
    return {"resourceType": "Parameters", "parameter": parameters}
