"""A QuestionnaireResponse checked against its Questionnaire (SDC / R4 Questionnaire rules).

Every problem names the item: ``expression`` is the FHIRPath to it (``QuestionnaireResponse.item[2].answer[0]``)
and the issue code follows docs/security.md: unknown linkId ``not-found``, wrong answer type or repeats ``structure``,
outside min/max or not an option ``value``, missing required ``required``, answer to a disabled item or a
calculated score that disagrees with its calculation ``invariant``.  ``in-progress`` responses may be partial.

R4 allows one item per linkId among siblings (only a repeating group appears more than once; a question's answers
go in its one item): a second item with the same linkId is refused (``structure``), never silently ignored.
With the measure's scoring ``rules``, the response also needs a subject and, when completed, must be scorable
(``scorable.py``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_server.errors import Issue
from fhir_server.scoring import attribution
from fhir_server.scoring.rules import ScoringRules
from fhir_server.scoring.scores import answers_by_link_id
from fhir_server.validation.enable_when import is_enabled
from fhir_server.validation.scorable import subject_issues, unscorable_issues
from fhir_server.validation.sdc import calculated_values, extension_value

ANSWER_KEYS = {
    "boolean": ("valueBoolean",),
    "decimal": ("valueDecimal",),
    "integer": ("valueInteger",),
    "date": ("valueDate",),
    "dateTime": ("valueDateTime",),
    "time": ("valueTime",),
    "string": ("valueString",),
    "text": ("valueString",),
    "url": ("valueUri",),
    "choice": ("valueCoding",),
    "open-choice": ("valueCoding", "valueString"),
    "attachment": ("valueAttachment",),
    "reference": ("valueReference",),
    "quantity": ("valueQuantity",),
}
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"
MAX_DECIMALS = "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces"
FINISHED = ("completed", "amended")


def validate_response(
    response: dict[str, Any], questionnaire: dict[str, Any], rules: ScoringRules | None = None
) -> list[Issue]:
    """Every issue of ``response`` against ``questionnaire``; ``rules``: the measure's scoring rules, when scored."""
    checker = _Checker(response, questionnaire)
    if rules is not None:
        checker.issues += subject_issues(response, questionnaire)
        checker.issues += [
            Issue(
                "value", f"QuestionnaireResponse.extension: {problem}", expression=["QuestionnaireResponse.extension"]
            )
            for problem in attribution.declared_issues(response)
        ]
    checker.items(response.get("item") or [], questionnaire.get("item") or [], "QuestionnaireResponse")
    if response.get("status") in FINISHED:
        checker.required(questionnaire.get("item") or [], response.get("item") or [], "QuestionnaireResponse")
        checker.calculations()
    if rules is not None and not checker.issues:  # only a response valid otherwise can be judged unscorable
        checker.issues += unscorable_issues(response, questionnaire, rules, checker.paths)
    return checker.issues


class _Checker:
    def __init__(self, response: dict[str, Any], questionnaire: dict[str, Any]) -> None:
        self.response = response
        self.questionnaire = questionnaire
        self.issues: list[Issue] = []
        self.paths: dict[str, str] = {}  # linkId → FHIRPath of its response item, for later checks
        # Every check below reads answers by linkId: one walk of the response for all of them (it was one per
        # enableWhen and per calculated item, 9 on a WAI-SR).
        self.answers = answers_by_link_id(response)

    def add(self, code: str, path: str, message: str) -> None:
        self.issues.append(Issue(code, f"{path}: {message}", expression=[path]))

    def items(self, given: list[Any], defined: list[dict[str, Any]], parent: str) -> None:
        by_link = {d.get("linkId"): d for d in defined}
        first: dict[str, str] = {}  # linkId → path of its first item among these siblings
        for index, item in enumerate(given):
            path = f"{parent}.item[{index}]"
            link_id = item.get("linkId") if isinstance(item, dict) else None
            definition = by_link.get(link_id)
            if definition is None:
                self.add("not-found", path, f"linkId '{str(link_id)[:64]}' is not an item of the Questionnaire here")
                continue
            if link_id in first and not (definition.get("type") == "group" and definition.get("repeats")):
                self.add(
                    "structure",
                    path,
                    f"'{link_id}' is already answered at {first[link_id]}: one item per linkId (its answers go in it)",
                )
                continue
            first.setdefault(link_id, path)
            self.paths[link_id] = path
            self.item(item, definition, path)

    def item(self, item: dict[str, Any], definition: dict[str, Any], path: str) -> None:
        answers = item.get("answer") or []
        kind = definition.get("type")
        if answers and kind in ("group", "display"):
            self.add("structure", path, f"a {kind} item takes no answer")
            return
        if len(answers) > 1 and not definition.get("repeats"):
            self.add("structure", path, f"'{definition['linkId']}' does not repeat but has {len(answers)} answers")
        if answers and not is_enabled(definition, self.response, self.questionnaire, self.answers):
            self.add(
                "invariant", path, f"'{definition['linkId']}' is not enabled by the other answers, so it takes none"
            )
        for number, answer in enumerate(answers):
            self.answer(answer, definition, f"{path}.answer[{number}]")
            if isinstance(answer, dict) and answer.get("item"):
                self.items(answer["item"], definition.get("item") or [], f"{path}.answer[{number}]")
        if item.get("item"):
            self.items(item["item"], definition.get("item") or [], path)

    def answer(self, answer: Any, definition: dict[str, Any], path: str) -> None:
        allowed = ANSWER_KEYS.get(definition.get("type", ""), ())
        keys = [k for k in answer if k.startswith("value")] if isinstance(answer, dict) else []
        if len(keys) != 1 or keys[0] not in allowed:
            wanted = " or ".join(allowed) or "no value"
            self.add(
                "structure", path, f"'{definition['linkId']}' is a {definition.get('type')} item: answer with {wanted}"
            )
            return
        value = answer[keys[0]]
        self._bounds(value, definition, path)
        if definition.get("answerOption") and keys[0] == "valueCoding":
            options = [o.get("valueCoding", {}) for o in definition["answerOption"]]
            if not any(_same_coding(value, option) for option in options):
                self.add(
                    "value", path, f"'{value.get('code')}' is not one of the answer options of '{definition['linkId']}'"
                )
        if keys[0] == "valueString" and definition.get("maxLength") and len(value) > definition["maxLength"]:
            self.add("value", path, f"longer than {definition['maxLength']} characters")

    def _bounds(self, value: Any, definition: dict[str, Any], path: str) -> None:
        if not isinstance(value, int | float | str) or isinstance(value, bool):
            return
        low, high = extension_value(definition, MIN_VALUE), extension_value(definition, MAX_VALUE)
        if low is not None and _less(value, low):
            self.add("value", path, f"{value} is below the minimum {low}")
        if high is not None and _less(high, value):
            self.add("value", path, f"{value} is above the maximum {high}")

    def required(self, defined: list[dict[str, Any]], given: list[Any], parent: str) -> None:
        present = {i.get("linkId"): i for i in given if isinstance(i, dict)}
        for definition in defined:
            link_id = definition.get("linkId")
            if definition.get("type") == "display" or definition.get("readOnly"):
                continue
            item = present.get(link_id)
            if not is_enabled(definition, self.response, self.questionnaire, self.answers):
                continue
            if definition.get("required") and (item is None or not (item.get("answer") or item.get("item"))):
                self.add("required", f"{parent}.item.where(linkId='{link_id}')", f"'{link_id}' is required")
            elif item is not None and definition.get("type") == "group":
                self.required(definition.get("item") or [], item.get("item") or [], self.paths.get(link_id, parent))

    def calculations(self) -> None:
        """A score the client sent must equal what the Questionnaire's own calculatedExpression gives."""
        answered = {link_id for link_id, answers in self.answers.items() if answers}
        for link_id, expected, definition in calculated_values(self.questionnaire, self.response, only=answered):
            path = self.paths.get(link_id, f"QuestionnaireResponse.item.where(linkId='{link_id}')")
            given = _answer_number(self.answers, link_id)
            if given is None:
                continue  # omitted scores are computed by the server; only contradictions are refused
            if expected is None:
                self.add("invariant", path, f"'{link_id}' has an answer, but its calculation gives none")
                continue
            places = extension_value(definition, MAX_DECIMALS)
            tolerance = Decimal(1).scaleb(-int(places)) / 2 if places is not None else Decimal("0.000001")
            if abs(given - expected) > tolerance:
                self.add("invariant", path, f"'{link_id}' is {given} but its calculation gives {expected}")


def _same_coding(value: Any, option: dict[str, Any]) -> bool:
    if not isinstance(value, dict) or value.get("code") != option.get("code"):
        return False
    return value.get("system") in (None, option.get("system")) or option.get("system") is None


def _less(a: Any, b: Any) -> bool:
    try:
        if isinstance(a, str) or isinstance(b, str):
            return str(a) < str(b)  # dates: ISO strings order correctly at equal precision
        return Decimal(str(a)) < Decimal(str(b))
    except InvalidOperation:
        return False


def _answer_number(answers: dict[str, list[dict[str, Any]]], link_id: str) -> Decimal | None:
    for answer in answers.get(link_id, []):
        for key in ("valueDecimal", "valueInteger"):
            if isinstance(answer.get(key), int | float) and not isinstance(answer.get(key), bool):
                return Decimal(str(answer[key]))
    return None
