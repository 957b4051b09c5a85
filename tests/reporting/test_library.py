"""Indicators are library data (issue 20, point 2): the shipped ones load, validate as R4 Measures and use only codes
the library defines; a broken indicator is a load error naming its file; and a new indicator is a folder — loaded
through ``FHIR_SERVER_LIBRARY_DIRS`` beside the shipped ones, it is served and evaluated with no Python."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.config import PROJECT_ROOT, Settings
from fhir_server.library.discover import discover
from fhir_server.library.errors import LoadError
from fhir_server.validation import validate_resource
from tests.reporting.practice import Practice, counts, score
from tests.support.server import ServerThread

SHIPPED = [PROJECT_ROOT / "terminology", PROJECT_ROOT / "questionnaires", PROJECT_ROOT / "indicators"]


def test_the_shipped_indicators_load_and_use_only_defined_codes():
    library = discover(SHIPPED)
    assert len(library.indicators) == 10
    codesystem = orjson.loads((PROJECT_ROOT / "terminology" / "codesystem-fit-indicators.json").read_bytes())
    defined = {c["code"] for c in codesystem["concept"]}
    for indicator in library.indicators:
        validate_resource(indicator.measure)
        for group in indicator.measure["group"]:
            assert group["code"]["coding"][0]["code"] in defined, indicator.id
            assert {s["code"]["coding"][0]["code"] for s in group["stratifier"]} <= defined, indicator.id
            assert all(p.get("description") for p in group["population"]), indicator.id  # said in words


def _copy(tmp_path: Path, name: str = "srs-mean") -> Path:
    folder = tmp_path / "indicators" / name
    shutil.copytree(PROJECT_ROOT / "indicators" / name, folder)
    return folder


def _edit(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        ("indicator.json", lambda d: d["groups"][0]["count"].update(rule="median"), "expected tags"),
        (
            "indicator.json",
            lambda d: d["groups"][0]["count"].update(codes=["srs-totl"]),
            "no instrument scores srs-totl",
        ),
        ("indicator.json", lambda d: d.update(measure="http://example.org/other"), "'measure' must be"),
        ("indicator.json", lambda d: d["groups"][0].update(code="renamed"), "groups must be the Measure's"),
        ("indicator.json", lambda d: d.update(stratifiers=["program"]), "stratifiers must be"),
        ("indicator.json", lambda d: d.update(stratifiers=["ward"]), "stratifiers"),
        ("indicator.json", lambda d: d["groups"][0]["count"].update(extra=1), "Extra inputs are not permitted"),
        ("measure.json", lambda d: d["group"][0]["population"].pop(), "must declare the populations"),
        ("measure.json", lambda d: d["scoring"]["coding"][0].update(code="proportion"), "scoring"),
        ("measure.json", lambda d: d.pop("version"), "needs a 'version'"),
    ],
)
def test_a_broken_indicator_is_a_load_error_naming_its_file(tmp_path, file, change, message):
    folder = _copy(tmp_path)
    _edit(folder / file, change)
    with pytest.raises(LoadError) as raised:
        discover([PROJECT_ROOT / "terminology", PROJECT_ROOT / "questionnaires", folder.parent])
    assert str(folder) in str(raised.value) and message in str(raised.value), str(raised.value)


def _new_indicator(root: Path) -> None:
    """Made up for the test: how well goals and topics felt covered (the SRS's second line), on average."""
    folder = root / "srs-goals-mean"
    folder.mkdir(parents=True)
    measure = json.loads((PROJECT_ROOT / "indicators" / "srs-mean" / "measure.json").read_text())
    measure.update(id="srs-goals-mean", url="http://example.org/fhir/Measure/srs-goals-mean", name="SrsGoalsMean",
                   title="Mean SRS Goals and Topics line")  # fmt: skip
    measure["group"][0]["code"]["coding"][0]["code"] = "srs-goals-mean"
    for stratifier in list(measure["group"][0]["stratifier"]):
        if stratifier["code"]["coding"][0]["code"] == "instrument":
            measure["group"][0]["stratifier"].remove(stratifier)
    (folder / "measure.json").write_text(json.dumps(measure))
    definition = {
        "measure": measure["url"],
        "groups": [{"code": "srs-goals-mean", "count": {"rule": "score-mean", "codes": ["srs-goals"]}}],
        "stratifiers": ["program", "clinician", "month", "age-band"],
    }
    (folder / "indicator.json").write_text(json.dumps(definition))


def test_a_new_indicator_is_a_folder(tmp_path, database_url, backend):
    _new_indicator(tmp_path / "more")
    folders = os.pathsep.join(str(p) for p in [*SHIPPED, tmp_path / "more"])
    settings = Settings(database_url=database_url, library_dirs=folders, _env_file=None)
    with ServerThread(settings, backend) as running, httpx.Client(base_url=running.fhir_base, timeout=30) as client:
        served = client.get("/Measure", params={"url": "http://example.org/fhir/Measure/srs-goals-mean"}).json()
        assert served["total"] == 1
        practice = Practice(client, uuid.uuid4().hex[:12])
        one, two = practice.patient("one", "1990-01-01"), practice.patient("two", "1991-01-01")
        practice.session(one, "2026-02-02", practice.ca, practice.program_a, srs=(90, 60, 90, 90))
        practice.session(two, "2026-02-03", practice.ca, practice.program_a, srs=(90, 80, 90, 90))
        found = practice.report("srs-goals-mean")["group"][0]
    assert counts(found)["measure-population"] == 2 and score(found) == 7.0  # (6.0 + 8.0) / 2
