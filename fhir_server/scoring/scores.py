"""Compute an instrument's scores from a QuestionnaireResponse, following its rules.  Pure: no I/O."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fhir_server.scoring.rules import ItemScore, ScoringRules


def answers_by_link_id(response: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every item's answers, flattened over nested items (linkIds are unique within a Questionnaire)."""
    found: dict[str, list[dict[str, Any]]] = {}

    def walk(items: list[Any]) -> None:
        for item in items or ():
            if not isinstance(item, dict):
                continue
            answers = item.get("answer") or []
            found.setdefault(item.get("linkId", ""), []).extend(a for a in answers if isinstance(a, dict))
            walk(item.get("item") or [])
            for answer in answers:
                if isinstance(answer, dict):
                    walk(answer.get("item") or [])

    walk(response.get("item") or [])
    return found


def item_value(
    rule: ItemScore, answers: list[dict[str, Any]], ordinals: dict[str, dict[str, Decimal]]
) -> Decimal | None:
    if not answers:
        return None
    answer = answers[0]
    if rule.read == "integer" and isinstance(answer.get("valueInteger"), int):
        return Decimal(answer["valueInteger"]) / rule.divideBy
    if rule.read == "decimal" and isinstance(answer.get("valueDecimal"), int | float):
        return Decimal(str(answer["valueDecimal"])) / rule.divideBy
    if rule.read == "ordinal" and isinstance(answer.get("valueCoding"), dict):
        ordinal = ordinals.get(rule.linkId, {}).get(answer["valueCoding"].get("code", ""))
        return None if ordinal is None else ordinal / rule.divideBy
    return None


def ordinal_values(questionnaire: dict[str, Any]) -> dict[str, dict[str, Decimal]]:
    """linkId → answer code → ordinalValue, from the Questionnaire's answerOptions."""
    out: dict[str, dict[str, Decimal]] = {}

    def walk(items: list[Any]) -> None:
        for item in items or ():
            for option in item.get("answerOption", ()):
                code = (option.get("valueCoding") or {}).get("code")
                for ext in option.get("extension", ()):
                    if ext.get("url") == "http://hl7.org/fhir/StructureDefinition/ordinalValue" and code is not None:
                        out.setdefault(item["linkId"], {})[code] = Decimal(str(ext.get("valueDecimal")))
            walk(item.get("item") or [])

    walk(questionnaire.get("item") or [])
    return out


def compute_scores(
    rules: ScoringRules, response: dict[str, Any], questionnaire: dict[str, Any]
) -> dict[str, Decimal | None]:
    """score id → value (rounded to the rule's decimals), or None when an item is missing (no proration)."""
    answers = answers_by_link_id(response)
    ordinals = ordinal_values(questionnaire)
    values = {rule.linkId: item_value(rule, answers.get(rule.linkId, []), ordinals) for rule in rules.itemScores}
    scores: dict[str, Decimal | None] = {}
    for score in rules.scores:
        parts = [values.get(link_id) for link_id in score.items]
        if any(part is None for part in parts):
            scores[score.id] = None
            continue
        total = sum(parts, Decimal(0))  # type: ignore[arg-type]
        value = total if score.method == "sum" else total / len(parts)
        scores[score.id] = value.quantize(Decimal(1).scaleb(-score.decimals), rounding=ROUND_HALF_UP)
    return scores


def item_scores(rules: ScoringRules, response: dict[str, Any], questionnaire: dict[str, Any]) -> dict[str, Decimal]:
    """linkId → item score for the answered scored items (for Observation components)."""
    answers = answers_by_link_id(response)
    ordinals = ordinal_values(questionnaire)
    out = {}
    for rule in rules.itemScores:
        value = item_value(rule, answers.get(rule.linkId, []), ordinals)
        if value is not None:
            out[rule.linkId] = value
    return out
