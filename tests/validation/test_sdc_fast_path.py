"""The native SDC expression shapes (fhir_server/validation/sdc_fast.py) give exactly what fhirpathpy gives: the
same list with the same types (int, Decimal('4.0'), dicts), and a raise where fhirpathpy raises, on every shipped
Questionnaire and example response, on hand-made edge cases and on seeded random mutations of the examples.
fhirpathpy is called directly here as the oracle."""

from __future__ import annotations

import copy
import json
import random
from decimal import Decimal
from functools import lru_cache
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models

from fhir_server import fhirjson
from fhir_server.config import PROJECT_ROOT
from fhir_server.validation import sdc, sdc_fast

FOLDER = PROJECT_ROOT / "questionnaires"
QUESTIONNAIRES = {p.parent.name: fhirjson.parse(p.read_bytes()) for p in sorted(FOLDER.glob("*/questionnaire.json"))}
EXAMPLES = sorted(FOLDER.glob("*/examples/*.json"))
ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
RAISES = "raises"


@lru_cache
def _fhirpath(expression: str) -> Any:
    return fhirpathpy.compile(expression, model=models["r4"])


def oracle(expression: str, response: Any, questionnaire: Any, env: dict[str, Any]) -> Any:
    try:
        return _fhirpath(expression)(response, {"resource": response, "questionnaire": questionnaire, **env})
    except Exception:
        return RAISES


def typed(value: Any) -> Any:
    """A value with every leaf's type spelled out: Decimal('4.0') is not Decimal('4'), 4, 4.0 nor '4'."""
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    return (type(value).__name__, repr(value))


def native(expression: str, response: Any, questionnaire: Any, env: dict[str, Any]) -> Any:
    """The fast path alone: None when it leaves the input to fhirpathpy."""
    try:
        return sdc_fast.evaluate(expression, response, questionnaire, env)
    except sdc_fast.WouldRaise:
        return RAISES


def served(expression: str, response: Any, questionnaire: Any, env: dict[str, Any]) -> Any:
    """What sdc.evaluate gives (the fast path, or fhirpathpy when it declines)."""
    try:
        return sdc.evaluate(expression, response, questionnaire, env)
    except sdc.ExpressionFailed:
        return RAISES


def expressions(questionnaire: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, expression) of the root variables in order, and the calculatedExpressions."""
    variables = [
        (e["valueExpression"]["name"], e["valueExpression"]["expression"])
        for e in questionnaire.get("extension") or ()
        if e["url"] == sdc.VARIABLE
    ]
    return variables, [expression for _, expression in sdc._calculated_items(questionnaire.get("item") or [])]


def check(questionnaire: dict[str, Any], response: Any, *, must_be_native: bool) -> None:
    """Every variable (with the env fhirpathpy builds up to it) and calculation: the fast path, when it answers,
    and sdc.evaluate always, equal the oracle; sdc.variables equals the oracle's env."""
    variables, calculations = expressions(questionnaire)
    env: dict[str, Any] = {}
    for name, expression in variables:
        result = compare(expression, response, questionnaire, env, must_be_native=must_be_native)
        env[name] = [] if result == RAISES else result  # as sdc.variables does
    for expression in calculations:
        compare(expression, response, questionnaire, env, must_be_native=must_be_native)
    if variables:
        assert typed(sdc.variables(questionnaire, response)) == typed(env)


def compare(expression: str, response: Any, questionnaire: Any, env: dict[str, Any], *, must_be_native: bool) -> Any:
    """Asserts the fast path (when it answers) and sdc.evaluate give the oracle's result; returns that."""
    result = oracle(expression, response, questionnaire, env)
    fast = native(expression, response, questionnaire, env)
    if must_be_native:
        assert fast is not None, f"left to fhirpathpy: {expression}"
    if fast is not None:
        assert typed(fast) == typed(result), expression
    assert typed(served(expression, response, questionnaire, env)) == typed(result), expression
    return result


# --- the shipped library -------------------------------------------------------------------------------------------


def shipped_expressions() -> list[str]:
    out = []
    for questionnaire in QUESTIONNAIRES.values():
        variables, calculations = expressions(questionnaire)
        out += [e for _, e in variables] + calculations
    return out


def test_every_shipped_expression_has_a_native_shape_and_every_shape_is_used():
    shipped = shipped_expressions()
    assert len(shipped) > 30
    used = {s.name for e in shipped for s in sdc_fast.SHAPES if s.pattern.fullmatch(e)}
    assert used == {s.name for s in sdc_fast.SHAPES}  # a shape no expression uses is untested dead code
    assert [e for e in shipped if sdc_fast.compiled(e) is None] == []  # a regex that stops matching


@pytest.mark.parametrize("loader", ["FhirDecimal", "float"])  # decimals as the API and store read them, or plain
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_shipped_examples_give_what_fhirpathpy_gives(path, loader):
    raw = path.read_bytes()
    response = (fhirjson.loads_stored(raw) if loader == "FhirDecimal" else json.loads(raw))["response"]
    check(QUESTIONNAIRES[path.parent.parent.name], response, must_be_native=True)


# --- hand-made edge cases ----------------------------------------------------------------------------------------


def wai(**answers: Any) -> dict[str, Any]:
    """A WAI-SR response: every item 'Fairly often' (3), except ``wai_sr_N=[answers]`` (None: no item at all)."""
    items = []
    for n in range(1, 13):
        given = answers.get(f"wai_sr_{n}", [coding("3")])
        if given is not None:
            items.append({"linkId": f"wai-sr-{n}", "answer": given})
    return {"resourceType": "QuestionnaireResponse", "status": "completed", "item": items}


def coding(code: Any) -> dict[str, Any]:
    return {"valueCoding": {"system": "http://fit-fhir.org/fhir/CodeSystem/wai-frequency", "code": code}}


def ors(*values: Any) -> dict[str, Any]:
    """An ORS response with these answers (a list: several) on its four lines."""
    items = [
        {"linkId": link, "answer": value if isinstance(value, list) else [value]}
        for link, value in zip(("individually", "interpersonally", "socially", "overall"), values, strict=False)
    ]
    return {"resourceType": "QuestionnaireResponse", "status": "completed", "item": items}


NESTED = wai(wai_sr_4=None)
NESTED["item"].append({"linkId": "group", "item": [{"linkId": "wai-sr-4", "answer": [coding("5")]}]})

NATIVE_CASES = {
    "wai: all answered": ("wai-sr", wai()),
    "wai: missing item": ("wai-sr", wai(wai_sr_1=None)),
    "wai: item without answer": ("wai-sr", wai(wai_sr_2=[])),
    "wai: two answers": ("wai-sr", wai(wai_sr_3=[coding("2"), coding("4")])),
    "wai: two equal answers": ("wai-sr", wai(wai_sr_3=[coding("2"), coding("2")])),
    "wai: unknown code": ("wai-sr", wai(wai_sr_5=[coding("9")])),
    "wai: integer code": ("wai-sr", wai(wai_sr_5=[coding(3)])),
    "wai: no code": ("wai-sr", wai(wai_sr_5=[{"valueCoding": {"system": "x"}}])),
    "wai: item nested in a group": ("wai-sr", NESTED),
    "wai: integer on a choice": ("wai-sr", wai(wai_sr_6=[{"valueInteger": 3}])),
    "wai: string on a choice": ("wai-sr", wai(wai_sr_6=[{"valueString": "3"}])),
    "wai: quantity with a code": ("wai-sr", wai(wai_sr_6=[{"valueQuantity": {"value": 2, "code": "3"}}])),
    "wai: two value types in an answer": ("wai-sr", wai(wai_sr_7=[{"valueString": "x", **coding("2")}])),
    "wai: no items": ("wai-sr", {"resourceType": "QuestionnaireResponse", "status": "completed"}),
    "wai: a null answer": ("wai-sr", wai(wai_sr_1=[None])),  # no members: skipped, as by fhirpathpy
    "wai: a list code": ("wai-sr", wai(wai_sr_1=[coding(["3"])])),  # flattened, as by fhirpathpy
    "ors: integers": ("ors", ors(40, 51, 62, 73)),
    "ors: decimals": ("ors", ors({"valueDecimal": 40.5}, 51, 62, 73)),
    "ors: FhirDecimal": ("ors", ors({"valueDecimal": fhirjson.FhirDecimal("40.50")}, 51, 62, 73)),
    "ors: a line missing": ("ors", ors(40, 51, 62)),
    "ors: two answers": ("ors", ors([{"valueInteger": 1}, {"valueInteger": 2}], 51, 62, 73)),
    "ors: a string": ("ors", ors({"valueString": "40"}, 51, 62, 73)),
    "ors: all strings": ("ors", ors(*[{"valueString": s} for s in "abcd"])),
    "ors: a boolean": ("ors", ors({"valueBoolean": True}, 51, 62, 73)),
    "ors: a coding": ("ors", ors(coding("4"), 51, 62, 73)),
    "ors: zeros": ("ors", ors(0, 0, 0, 0)),
}


@pytest.mark.parametrize("case", NATIVE_CASES)
def test_edge_cases_are_native_and_exact(case):
    instrument, response = NATIVE_CASES[case]
    for item in response.get("item") or []:  # bare ints in ors(): valueInteger
        if "answer" in item:
            item["answer"] = [{"valueInteger": a} if isinstance(a, int) else a for a in item["answer"]]
    check(QUESTIONNAIRES[instrument], response, must_be_native=True)


def with_options(change: Any) -> dict[str, Any]:
    """The WAI-SR with ``change(option)`` applied to item 1's option '3'."""
    questionnaire = copy.deepcopy(QUESTIONNAIRES["wai-sr"])
    change(next(o for o in questionnaire["item"][1]["answerOption"] if o["valueCoding"]["code"] == "3"))
    return questionnaire


QUESTIONNAIRE_CASES = {
    "ordinal 2.5": lambda o: o["extension"][0].update(valueDecimal=2.5),
    "ordinal 3.0 float": lambda o: o["extension"][0].update(valueDecimal=3.0),
    "ordinal valueInteger": lambda o: o["extension"].__setitem__(0, {"url": ORDINAL, "valueInteger": 7}),
    "no ordinal": lambda o: o.pop("extension"),
    "two ordinals": lambda o: o["extension"].append({"url": ORDINAL, "valueDecimal": 9}),
    "an extension without url": lambda o: o["extension"].append({"valueDecimal": 9}),
    "a primitive extension": lambda o: o["valueCoding"].update(_code={"extension": []}),
    "option with a resourceType": lambda o: o.update(resourceType="Coding"),
}


@pytest.mark.parametrize("case", QUESTIONNAIRE_CASES)
def test_changed_answer_options_give_what_fhirpathpy_gives(case):
    check(with_options(QUESTIONNAIRE_CASES[case]), wai(), must_be_native=False)


FALLBACK_CASES = {
    "no resourceType": {"status": "completed", "item": wai()["item"]},
    "an item with a resourceType": wai(wai_sr_2=[coding("2")]) | {"item": [{"resourceType": "X", **wai()["item"][0]}]},
    "a primitive extension": wai(wai_sr_1=[{"_valueCoding": {"extension": [{"url": "x", "valueString": "y"}]}}]),
    "a list linkId": {"resourceType": "QuestionnaireResponse", "item": [{"linkId": ["wai-sr-1"], "answer": []}]},
}


@pytest.mark.parametrize("case", FALLBACK_CASES)
def test_unusual_data_is_left_to_fhirpathpy(case):
    response = FALLBACK_CASES[case]
    check(QUESTIONNAIRES["wai-sr"], response, must_be_native=False)
    first = expressions(QUESTIONNAIRES["wai-sr"])[0][0][1]
    assert native(first, response, QUESTIONNAIRES["wai-sr"], {}) is None


SPACED = "iif(%a.exists()  and %b.exists() , ( %a+%b )/3,{})"
ENV_CASES = [
    ("iif(%a.exists() and %b.exists(), (%a + %b) / 10, {})", {"a": [31], "b": [4]}),  # int / int: a float
    ("iif(%a.exists() and %b.exists(), (%a + %b) / 4, {})", {"a": [Decimal("2.5")], "b": [3]}),
    ("iif(%a.exists() and %b.exists(), (%a + %b) / 2.5, {})", {"a": [1.25], "b": [3]}),
    ("iif(%a.exists() and %b.exists(), (%a + %b) / 4.0, {})", {"a": [2], "b": [3]}),
    ("iif(%a.exists() and %b.exists(), (%a + %b) / 0, {})", {"a": [2], "b": [3]}),
    ("iif(%a.exists() and %b.exists(), %a + %b, {})", {"a": [2], "b": []}),
    ("iif(%a.exists() and %b.exists(), %a + %b, {})", {"a": [2, 3], "b": [1]}),
    ("iif(%a.exists() and %b.exists(), %a + %b, {})", {"a": ["x"], "b": ["y"]}),
    ("iif(%a.exists() and %b.exists(), (%a + %b) / 2, {})", {"a": ["x"], "b": ["y"]}),
    ("iif(%a.exists() and %b.exists(), %a + %b, {})", {"a": [True], "b": [1]}),
    ("iif(%a.exists() and %b.exists(), %a + %b, {})", {"a": [{"code": "1"}], "b": [1]}),
    ("iif(%a.exists() and %b.exists(), %a + %b, {})", {"a": [1]}),  # undefined %b
    ("iif(%a.exists() and %b.exists(), %a + %c, {})", {"a": [1], "b": [2]}),
    ("iif(%a.exists() and %b.exists(), %a + %b, {})", {"a": None, "b": 2}),
    ("iif(%a.exists(), (%a) / 2, {})", {"a": [4, 5]}),
    ("iif(%a.exists(), (%a) / 2, {})", {"a": [True]}),
    ("iif(%a.exists(), %a, {})", {"a": [1.5, {"x": 2.5}]}),
    (SPACED, {"a": [1], "b": [Decimal("1.0")]}),
    ("iif(%resource.exists(), %resource, {})", {}),
    ("iif(%true.exists(), %true, {})", {"true": [1]}),  # a keyword: fhirpathpy cannot parse it
    ("iif(%is.exists(),\n\t%is + %is, {})", {"is": [1]}),  # an identifier after all; FHIRPath whitespace
    ("iif(%a.exists(), %a + %a, {})", {"a": [1], "resource": [5]}),
]


@pytest.mark.parametrize(("expression", "env"), ENV_CASES, ids=[f"{i}" for i in range(len(ENV_CASES))])
def test_calculations_on_any_variables_give_what_fhirpathpy_gives(expression, env):
    response = ors(1, 2, 3, 4)
    compare(expression, response, QUESTIONNAIRES["ors"], env, must_be_native=False)


def test_whitespace_variants_still_match_and_other_shapes_do_not():
    assert sdc_fast.compiled(SPACED) is not None
    assert sdc_fast.compiled("%resource.item.where(linkId = 'a').answer.value") is not None
    for other in (
        "%resource.item.where(linkId='a').answer.value.first()",
        "%resource.item.where(linkId='a\\'b').answer.value",  # escapes: fhirpathpy unescapes
        "iif(%a.exists(), %a + %b / 4, {})",  # precedence: a + (b / 4)
        "iif(%a.exists(), (%a + %b) * 4, {})",
        "%resource.repeat(item).where(linkId='a').answer.value",
        "iif(%day.exists(), %day, {})",  # a keyword, not a name
        "%resource.item.where(linkId\f= 'a').answer.value",  # not FHIRPath whitespace
    ):
        assert sdc_fast.compiled(other) is None, other


# --- seeded random mutations of the examples ---------------------------------------------------------------------

ANSWERS = [
    coding("1"),
    coding("5"),
    coding("9"),
    coding(2),
    {"valueInteger": 3},
    {"valueInteger": 100},
    {"valueDecimal": 2.5},
    {"valueDecimal": fhirjson.FhirDecimal("7.10")},
    {"valueString": "3"},
    {"valueBoolean": False},
    {"valueQuantity": {"value": 1.5, "code": "2"}},
    {"_valueCoding": {"extension": [{"url": "x", "valueString": "y"}]}},
    {},
]


def mutate(response: dict[str, Any], rng: random.Random) -> None:
    items = response.setdefault("item", [])
    for _ in range(rng.randint(1, 3)):
        if not items:
            return
        index = rng.randrange(len(items))
        item = items[index]
        kind = rng.randrange(7)
        if kind == 0:
            del items[index]
        elif kind == 1:
            item["answer"] = []
        elif kind == 2:
            item.setdefault("answer", []).append(copy.deepcopy(rng.choice(ANSWERS)))
        elif kind == 3:
            item["answer"] = [copy.deepcopy(rng.choice(ANSWERS))]
        elif kind == 4:
            items[index] = {"linkId": "group", "item": [item]}
        elif kind == 5:
            items.append(copy.deepcopy(item))
        else:
            item.pop("linkId", None)


@pytest.mark.parametrize("seed", range(6))
def test_random_mutations_give_what_fhirpathpy_gives(seed):
    rng = random.Random(seed)
    for path in EXAMPLES:
        instrument = path.parent.parent.name
        if not expressions(QUESTIONNAIRES[instrument])[0] or rng.random() > 0.4:
            continue  # no expressions; or keep the run short (fhirpathpy takes ~0.1 s on a WAI-SR response)
        response = json.loads(path.read_text())["response"]
        mutate(response, rng)
        check(QUESTIONNAIRES[instrument], response, must_be_native=False)
