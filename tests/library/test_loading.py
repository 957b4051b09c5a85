"""Loading the library (issue: measures library): content packs put licensed wording into a new Questionnaire
version; a new measure is a folder, with no Python; published versions never change silently; the load command
and $validate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fhir_server.config import PROJECT_ROOT, Settings
from fhir_server.engine.library_sync import sync_resources
from fhir_server.library import LoadError, discover
from tests.api.fhir import post
from tests.support.server import ServerThread

PACK = PROJECT_ROOT / "tests" / "data" / "content-pack-example"
SRS = "http://fit-fhir.org/fhir/Questionnaire/srs"


def _server(tmp_path: Path, **settings) -> ServerThread:
    return ServerThread(
        Settings(database_url=f"sqlite:///{tmp_path / 'fhir.db'}", _env_file=None, **settings), "sqlite"
    )


def _texts(questionnaire: dict) -> dict[str, str]:
    out = {}

    def walk(items):
        for item in items:
            out[item["linkId"]] = item.get("text", "")
            walk(item.get("item", []))

    walk(questionnaire["item"])
    return out


def test_a_content_pack_serves_its_text_as_a_new_version(tmp_path):
    with _server(tmp_path, content_packs=str(PACK)) as server, httpx.Client(base_url=server.fhir_base) as client:
        versions = client.get("/Questionnaire", params={"url": SRS}).json()
        by_version = {e["resource"]["version"]: e["resource"] for e in versions["entry"]}
        assert set(by_version) == {"1.0.2", "1.0.2-testpack"}
        licensed, shipped = _texts(by_version["1.0.2-testpack"]), _texts(by_version["1.0.2"])
        assert licensed["relationship-lower"].startswith("TEST PACK:")
        assert not shipped["relationship-lower"].startswith("TEST PACK:")
        assert "Test site" in by_version["1.0.2-testpack"]["copyright"]
        # A response naming only the url means the licensed version the site loaded
        answers = [
            {"linkId": n, "answer": [{"valueInteger": 90}]} for n in ("relationship", "goals", "approach", "overall")
        ]
        response = {
            "resourceType": "QuestionnaireResponse",
            "questionnaire": SRS,
            "status": "completed",
            "subject": {"reference": "Patient/p1"},
            "authored": "2026-11-20T10:00:00Z",
            "item": answers,
        }
        assert post(client, "/QuestionnaireResponse", response).status_code == 201


@pytest.mark.parametrize(
    ("written_for", "refused"),
    [("1.0.0", False), ("1.0.2", False), (None, False), ("1.1.0", True), ("2.0.0", True)],
)
def test_a_packs_overlay_applies_to_patch_releases_of_its_version(tmp_path, written_for, refused):
    """Semver, as the Questionnaires declare: a patch release changes no item, so a site's pack written for 1.0.0
    keeps its wording on 1.0.2; a minor or major release may change items and is refused, naming the overlay."""
    pack = tmp_path / "pack"
    shutil.copytree(PACK, pack)
    overlay = json.loads((pack / "srs.json").read_text())
    overlay["version"] = written_for
    (pack / "srs.json").write_text(json.dumps({k: v for k, v in overlay.items() if v is not None}))
    if refused:
        with pytest.raises(LoadError, match=rf"srs\.json: the overlay is for version {written_for}, .* has 1\.0\.2"):
            discover([PROJECT_ROOT / "questionnaires"], packs=[pack])
        return
    [(_, licensed)] = discover([PROJECT_ROOT / "questionnaires"], packs=[pack]).licensed
    assert (licensed["id"], licensed["version"]) == ("srs-1.0.2-testpack", "1.0.2-testpack")
    assert _texts(licensed)["relationship-lower"].startswith("TEST PACK:")


def test_a_new_measure_is_a_folder_and_needs_no_python(tmp_path):
    library = tmp_path / "library"
    shutil.copytree(PROJECT_ROOT / "terminology", library / "terminology")
    instrument = library / "measures" / "ars"
    instrument.mkdir(parents=True)
    url = "http://example.org/fhir/Questionnaire/ars"
    options = [
        {
            "valueCoding": {"system": "http://example.org/scale", "code": str(n)},
            "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": n}],
        }
        for n in range(1, 6)
    ]
    (instrument / "questionnaire.json").write_text(
        json.dumps(
            {
                "resourceType": "Questionnaire",
                "id": "ars",
                "url": url,
                "version": "0.1.0",
                "status": "active",
                "subjectType": ["Patient"],
                "item": [
                    {"linkId": f"q{n}", "type": "choice", "required": True, "answerOption": options} for n in (1, 2, 3)
                ],
            }
        )
    )
    (instrument / "scoring.json").write_text(
        json.dumps(
            {
                "instrument": "ars",
                "questionnaire": url,
                "itemScores": [{"linkId": f"q{n}", "code": f"ars-{n}", "read": "ordinal"} for n in (1, 2, 3)],
                "scores": [
                    {
                        "id": "total",
                        "linkId": "q1",
                        "code": "ars-total",
                        "method": "sum",
                        "items": ["q1", "q2", "q3"],
                        "decimals": 0,
                        "min": 3,
                        "max": 15,
                    }
                ],
            }
        )
    )
    dirs = os.pathsep.join([str(library / "terminology"), str(library / "measures")])
    with _server(tmp_path, library_dirs=dirs) as server, httpx.Client(base_url=server.fhir_base) as client:
        served = client.get("/Questionnaire", params={"url": url}).json()
        assert served["total"] == 1
        answers = [
            {"linkId": f"q{n}", "answer": [{"valueCoding": {"system": "http://example.org/scale", "code": c}}]}
            for n, c in ((1, "4"), (2, "5"), (3, "2"))
        ]
        created = post(
            client,
            "/QuestionnaireResponse",
            {
                "resourceType": "QuestionnaireResponse",
                "questionnaire": f"{url}|0.1.0",
                "status": "completed",
                "subject": {"reference": "Patient/a"},
                "authored": "2026-11-20T10:00:00Z",
                "item": answers,
            },
        )
        assert created.status_code == 201, created.text
        found = client.get("/Observation", params={"derived-from": f"QuestionnaireResponse/{created.json()['id']}"})
        observation = found.json()["entry"][0]["resource"]
        assert observation["valueQuantity"]["value"] == 11
        assert [c["valueQuantity"]["value"] for c in observation["component"][:3]] == [4, 5, 2]


def test_a_changed_file_with_an_unchanged_version_is_refused_naming_the_file(tmp_path):
    folder = tmp_path / "terminology"
    shutil.copytree(PROJECT_ROOT / "terminology", folder)
    with _server(tmp_path, library_dirs=str(folder)) as server:
        changed = json.loads((folder / "codesystem-fit-flags.json").read_text())
        changed["concept"][0]["definition"] = "edited without a new version"
        (folder / "codesystem-fit-flags.json").write_text(json.dumps(changed))
        library = discover([folder])
        with pytest.raises(LoadError, match=r"codesystem-fit-flags\.json.*needs a new version"):
            sync_resources(server.app.state.fhir, library.resources())


def test_broken_library_files_name_the_file(tmp_path):
    bad = tmp_path / "bad"
    (bad / "x").mkdir(parents=True)
    (bad / "x" / "questionnaire.json").write_text('{"resourceType": "Questionnaire", "status": "done"}')
    with pytest.raises(LoadError, match=r"x/questionnaire.json"):
        discover([bad])
    (bad / "x" / "questionnaire.json").write_text(
        json.dumps(
            {
                "resourceType": "Questionnaire",
                "url": "http://e/q",
                "version": "1",
                "status": "active",
                "item": [{"linkId": "a", "type": "integer"}],
            }
        )
    )
    (bad / "x" / "scoring.json").write_text(
        json.dumps(
            {
                "instrument": "x",
                "questionnaire": "http://e/q",
                "itemScores": [{"linkId": "zz", "code": "c", "read": "integer"}],
            }
        )
    )
    with pytest.raises(LoadError, match=r"scoring.json: linkIds not in the Questionnaire: zz"):
        discover([bad])


def test_load_command_reports_progress_and_is_idempotent(tmp_path):
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    subprocess.run([sys.executable, "-m", "fhir_server", "db", "upgrade"], env=env, check=True, capture_output=True)
    command = [
        sys.executable,
        "-m",
        "fhir_server",
        "load",
        str(PROJECT_ROOT / "terminology"),
        str(PROJECT_ROOT / "questionnaires"),
        "--content-pack",
        str(PACK),
    ]
    # every terminology file, every instrument, the pack's licensed versions
    files = len(list((PROJECT_ROOT / "terminology").glob("*.json")))
    instruments = len(list((PROJECT_ROOT / "questionnaires").glob("*/questionnaire.json")))
    expected = files + instruments + len(list(PACK.rglob("*.json"))) - 1  # the pack's manifest is no resource
    first = subprocess.run(command, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert f"{expected} resources stored, 0 already current" in first.stdout
    assert "loading [" in first.stderr
    again = subprocess.run(command, env=env, capture_output=True, text=True)
    assert f"0 resources stored, {expected} already current" in again.stdout
    broken = subprocess.run(
        [sys.executable, "-m", "fhir_server", "load", str(tmp_path / "missing")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert broken.returncode == 1 and "missing: library folder does not exist" in broken.stderr


def test_validate_operation(client, uid):
    response = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{SRS}|1.0.2",
        "status": "completed",
        "subject": {"reference": f"Patient/{uid}"},
        "item": [{"linkId": "relationship", "answer": [{"valueInteger": 101}]}],
    }
    outcome = post(client, "/QuestionnaireResponse/$validate", response).json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert {i["code"] for i in outcome["issue"]} >= {"value", "required"}
    good = post(client, "/Patient/$validate", {"resourceType": "Patient", "gender": "female"}).json()
    assert good["issue"][0]["severity"] == "information"
    assert client.get("/QuestionnaireResponse", params={"subject": f"Patient/{uid}"}).json().get("entry") is None


def test_responses_to_the_release_before_stay_accepted_and_scored_after_an_upgrade(tmp_path):
    """A database that held SRS 1.0.0 before the upgrade to 1.0.2 keeps it: a response an EHR pinned to 1.0.0 is
    still checked against 1.0.0 and scored (scoring reads the instrument by url), and one naming the url alone
    means the new release."""
    shipped = json.loads((PROJECT_ROOT / "questionnaires" / "srs" / "questionnaire.json").read_text())
    before = {k: v for k, v in shipped.items() if k not in ("meta", "id")}  # 1.0.0 as it was released
    before["extension"] = [e for e in shipped["extension"] if "versionAlgorithm" not in e["url"]]
    before["version"] = "1.0.0"
    with _server(tmp_path) as server, httpx.Client(base_url=server.fhir_base) as client:
        assert post(client, "/Questionnaire", before).status_code == 201
        versions = {e["resource"]["version"] for e in client.get("/Questionnaire", params={"url": SRS}).json()["entry"]}
        assert versions == {"1.0.0", "1.0.2"}
        for canonical in (f"{SRS}|1.0.0", SRS):
            answers = [{"linkId": n, "answer": [{"valueInteger": 70}]} for n in ("relationship", "goals", "approach")]
            response = {
                "resourceType": "QuestionnaireResponse",
                "questionnaire": canonical,
                "status": "completed",
                "subject": {"reference": "Patient/p1"},
                "authored": "2026-12-01T10:00:00Z",
                "item": [*answers, {"linkId": "overall", "answer": [{"valueInteger": 75}]}],
            }
            created = post(client, "/QuestionnaireResponse", response)
            assert created.status_code == 201, created.text
            scores = client.get(
                "/Observation", params={"derived-from": f"QuestionnaireResponse/{created.json()['id']}"}
            )
            totals = [e["resource"]["valueQuantity"]["value"] for e in scores.json().get("entry", [])]
            assert totals == [28.5], scores.text
        wrong = {**response, "questionnaire": f"{SRS}|1.1.0"}
        assert post(client, "/QuestionnaireResponse", wrong).status_code == 422
