"""The measures library (questionnaires/README.md, SDC): every Questionnaire and terminology file is valid R4; each
instrument's golden examples round-trip through the server (valid ones stored with the expected scores, invalid
ones refused with the expected OperationOutcome naming the item); an SDC renderer's calculatedExpression gives
the same score as the server's rules; and no licensed SRS/ORS/CSRS/CORS wording is in the repository."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal

import fhirpathpy
import pytest
from fhirpathpy.models import models

from fhir_server.config import PROJECT_ROOT
from fhir_server.library import discover
from fhir_server.scoring.scores import compute_scores
from fhir_server.validation import validate_resource
from fhir_server.validation.sdc import calculated_values
from tests.api.fhir import post
from tests.library.examples import QUESTIONNAIRES, TERMINOLOGY, all_examples, link_id_at

EXAMPLES = all_examples()
LIBRARY = discover([TERMINOLOGY, QUESTIONNAIRES])
INSTRUMENTS = {i.id: i for i in LIBRARY.instruments}
CALC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"


@pytest.mark.parametrize(
    "path",
    sorted([*QUESTIONNAIRES.glob("*/questionnaire.json"), *TERMINOLOGY.glob("*.json")]),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_library_file_is_valid_r4(path):
    resource = json.loads(path.read_text())
    validate_resource(resource)
    assert resource["url"].startswith("http://fit-fhir.org/fhir/") and resource["version"]


def test_every_scored_instrument_follows_the_sdc_conventions():
    for instrument in INSTRUMENTS.values():
        q = instrument.questionnaire
        assert q["status"] == "active" and q["subjectType"] == ["Patient"] and q["copyright"]
        launch = [e for e in q.get("extension", []) if e["url"].endswith("sdc-questionnaire-launchContext")]
        assert {e["extension"][0]["valueCoding"]["code"] for e in launch} == {"patient", "encounter", "user"}
        if instrument.rules is None or not instrument.rules.scores:
            continue
        scored = {s.linkId: s for s in instrument.rules.scores}
        for item in q["item"]:
            if item["linkId"] in scored:
                urls = {e["url"] for e in item.get("extension", [])}
                assert item["readOnly"] and CALC in urls
                assert "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-observationExtract" in urls
            elif item["type"] == "integer":  # visual-analog line in millimetres
                urls = {e["url"] for e in item["extension"]}
                assert {
                    "http://hl7.org/fhir/StructureDefinition/minValue",
                    "http://hl7.org/fhir/StructureDefinition/maxValue",
                    "http://hl7.org/fhir/StructureDefinition/questionnaire-sliderStepValue",
                } <= urls
                controls = {c["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] for c in item["item"]}
                assert {"lower", "upper"} <= controls


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.expect["valid"]], ids=lambda e: e.name)
def test_fhirpath_calculations_equal_the_scoring_rules(example):
    instrument = INSTRUMENTS[example.instrument]
    if instrument.rules is None or not instrument.rules.scores:
        pytest.skip("unscored engagement form")
    engine = compute_scores(instrument.rules, example.response, instrument.questionnaire)
    renderer = {link_id: value for link_id, value, _ in calculated_values(instrument.questionnaire, example.response)}
    for score in instrument.rules.scores:
        assert renderer[score.linkId] == engine[score.id], score.id
        expected = example.expect.get("scores", {}).get(score.id)
        assert engine[score.id] == (None if expected is None else Decimal(str(expected))), score.id


def test_fhirpathpy_evaluates_the_shipped_expressions_without_our_helpers():
    """What an SDC renderer does: variables in order, then the calculatedExpression (fhirpathpy, R4 model)."""
    instrument = INSTRUMENTS["srs"]
    example = next(e for e in EXAMPLES if e.name == "srs/valid-total-35-9")
    env = {}
    for ext in instrument.questionnaire["extension"]:
        if ext["url"].endswith("/variable"):
            expression = ext["valueExpression"]
            env[expression["name"]] = fhirpathpy.evaluate(
                example.response, expression["expression"], {"resource": example.response, **env}, model=models["r4"]
            )
    total = next(i for i in instrument.questionnaire["item"] if i["linkId"] == "total")
    expression = next(e for e in total["extension"] if e["url"] == CALC)["valueExpression"]["expression"]
    assert fhirpathpy.evaluate(
        example.response, expression, {"resource": example.response, **env}, model=models["r4"]
    ) == [Decimal("35.9")]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_examples_round_trip_through_the_server(client, uid, example):
    response = example.for_patient(f"ex-{uid}")
    answer = post(client, "/QuestionnaireResponse", response)
    if not example.expect["valid"]:
        assert answer.status_code == example.expect.get("status", 422), answer.text
        outcome = answer.json()
        issue = next(i for i in outcome["issue"] if i["code"] == example.expect["code"])
        assert link_id_at(response, issue["expression"][0]) == example.expect["linkId"], issue
        return
    assert answer.status_code == 201, answer.text
    stored = answer.json()
    found = client.get("/Observation", params={"derived-from": f"QuestionnaireResponse/{stored['id']}"}).json()
    observations = {o["resource"]["code"]["coding"][0]["code"]: o["resource"] for o in found.get("entry", [])}
    rules = INSTRUMENTS[example.instrument].rules
    for score in rules.scores if rules else []:
        expected = example.expect.get("scores", {}).get(score.id)
        if score.observation != "own" or response["status"] != "completed":
            continue
        if expected is None:
            assert score.code not in observations
        else:
            assert Decimal(str(observations[score.code]["valueQuantity"]["value"])) == Decimal(str(expected))
    if "flags" in example.expect:  # the golden first session: exactly these Flags and interpretations, by default
        flagged = [e["resource"] for e in client.get("/Flag", params={"patient": f"ex-{uid}"}).json().get("entry", [])]
        assert sorted(f["code"]["coding"][0]["code"] for f in flagged) == example.expect["flags"]
        total = observations[rules.primary.code]
        assert [i["text"] for i in total.get("interpretation", [])] == example.expect["interpretation"]


def test_the_wai_sr_cites_its_source():
    """Hatcher & Gillaspy (2006) appeared in Psychotherapy Research 16(1), not Psychological Assessment."""
    copyright_line = INSTRUMENTS["wai-sr"].questionnaire["copyright"]
    readme = (QUESTIONNAIRES / "wai-sr" / "README.md").read_text()
    for text in (copyright_line, readme.replace("*", "")):
        assert "Psychotherapy Research" in text and "16(1), 12-25" in text and "10.1080/10503300500352500" in text
        assert "Psychological Assessment" not in text


# -- licence: no licensed wording ----------------------------------------------------------------------------
# tests/data/licensed-phrase-digests.json holds SHA-256 digests of distinctive phrases of the licensed forms:
# the phrases themselves must not be in the repository, so only their digests are.
_WORDS = re.compile(r"[a-z]+")


def _windows(text: str, size: int):
    words = _WORDS.findall(text.lower())
    for start in range(len(words) - size + 1):
        yield hashlib.sha256(" ".join(words[start : start + size]).encode()).hexdigest()


def test_no_licensed_wording_in_the_repository():
    digests = json.loads((PROJECT_ROOT / "tests" / "data" / "licensed-phrase-digests.json").read_text())
    assert len(digests["digests"]) >= 10  # the check must have something to look for
    sizes = {int(k): set(v) for k, v in digests["by_length"].items()}
    scanned = 0
    for folder in ("questionnaires", "terminology", "fhir_server", "tests"):
        for path in (PROJECT_ROOT / folder).rglob("*"):
            if path.suffix not in (".json", ".md", ".py", ".html", ".txt") or "licensed-phrase-digests" in path.name:
                continue
            text = path.read_text(errors="ignore")
            scanned += 1
            for size, wanted in sizes.items():
                hits = wanted.intersection(_windows(text, size))
                assert not hits, f"{path} contains licensed wording"
    assert scanned > 50
