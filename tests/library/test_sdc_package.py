"""HL7's Structured Data Capture package (hl7.fhir.uv.sdc, the FHIR 4.0.1 edition on npm) with ``fhir-server load``,
and our shipped Questionnaires and their valid example responses against its profiles.

npm installs a FHIR package without the tarball's ``package/`` folder; ``read_package`` reads that layout too (the
first tests, on a small package written for them).  The real package comes from tests/foreign_ehr/node_modules
(``npm ci`` there, which ``make test`` runs); without it these tests skip, and under CI they fail.

The package loads as HL7 publishes it.  Our Questionnaires (1.0.1) claim the SDC profiles whose features they use
and meet every rule of this SDC edition, sdc-2 included (a versioned Questionnaire says how its versions compare,
with R5's versionAlgorithm as an extension: semver).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.library import LoadError
from fhir_server.library.packages import is_package, read_package
from tests.api.fhir import post
from tests.foreign_ehr.harness import MODULES, require_node
from tests.library.examples import QUESTIONNAIRES, all_examples
from tests.library.test_packages import NAME, build_package, load
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.server import ServerThread

SDC = MODULES / "hl7.fhir.uv.sdc"  # 4.0.0-ballot, the edition for FHIR 4.0.1 (tests/foreign_ehr/package.json)
SDC_SD = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
# What our Questionnaires do, by SDC's profiles: the base one; rendering (itemControl sliders, sliderStepValue);
# behaviour (launchContext, variables, calculatedExpression, min/maxValue); Observation-based extraction.
QUESTIONNAIRE_PROFILES = [
    SDC_SD + name
    for name in (
        "sdc-questionnaire",
        "sdc-questionnaire-render",
        "sdc-questionnaire-behave",
        "sdc-questionnaire-extr-obsn",
    )
]
ITEM_MEDIA = SDC_SD + "sdc-questionnaire-itemMedia"  # an SDC extension none of ours uses (no shipped definition)
VERSION_ALGORITHM = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Questionnaire.versionAlgorithm[x]"
SEMVER = {
    "url": VERSION_ALGORITHM,
    "valueCoding": {"system": "http://hl7.org/fhir/version-algorithm", "code": "semver"},
}

# Reading npm's layout (no database)


def npm_installed(tmp_path: Path, uid: str) -> tuple[Path, Path]:
    """The test package as a tarball and as ``npm install`` leaves it: the tarball's ``package/`` folder is
    ``node_modules/<name>`` (the IG Publisher's xml/ and openapi/ folders beside the resources come along)."""
    archive = build_package(tmp_path, uid)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    installed = tmp_path / "node_modules" / NAME
    shutil.copytree(tmp_path / "unpacked" / "package", installed)
    (installed / "xml").mkdir()
    (installed / "xml" / "ValueSet-pronouns.xml").write_text("<ValueSet/>")
    (installed / "openapi").mkdir()
    (installed / "openapi" / "patient.openapi.json").write_text('{"openapi": "3.0.2"}')
    return archive, installed


def test_npms_installed_layout_reads_as_the_tarball(tmp_path):
    archive, installed = npm_installed(tmp_path, "n1")
    assert is_package(installed) and is_package(archive) and is_package(tmp_path / "unpacked")
    packed, from_npm = read_package(archive), read_package(installed)
    assert from_npm.label == packed.label == f"{NAME}#1.0.0"
    assert from_npm.skipped == packed.skipped == 2  # the example and the Patient; xml/ and openapi/ are not read
    # The same resources in the same order, each named by its file in the folder npm made
    assert [body for _, body in from_npm.resources] == [body for _, body in packed.resources]
    assert [file.as_posix() for file, _ in from_npm.resources] == [
        file.as_posix().removeprefix("package/") for file, _ in packed.resources
    ]


def test_npms_layout_without_an_index_reads_every_file(tmp_path):
    _, installed = npm_installed(tmp_path, "n2")
    (installed / ".index.json").unlink()
    package = read_package(installed)
    assert len(package.resources) == 3 and package.skipped == 2  # the Patient parsed to learn it is one


@pytest.mark.parametrize(
    "manifest",
    [
        {"name": "fhir-server-foreign-ehr", "version": "1.0.0", "dependencies": {"@medplum/core": "4.5.2"}},
        {"name": NAME, "fhirVersions": ["4.0.1"]},  # no version: not taken for a package (nor refused as one)
        "not json {",
    ],
)
def test_a_node_projects_folder_is_not_a_package(tmp_path, manifest):
    (tmp_path / "package.json").write_text(manifest if type(manifest) is str else json.dumps(manifest))
    assert not is_package(tmp_path)


def test_npms_layout_is_checked_as_the_tarball_is(tmp_path):
    """An old manifest's ``fhir-version-list`` is read; another FHIR version is refused, naming npm's file."""
    (tmp_path / "package.json").write_text(
        json.dumps({"name": NAME, "version": "0.9.0", "fhir-version-list": ["4.0.1"]})
    )
    (tmp_path / "ValueSet-x.json").write_text(json.dumps({"resourceType": "ValueSet", "url": "http://x.org/vs"}))
    assert is_package(tmp_path)
    package = read_package(tmp_path)
    assert package.label == f"{NAME}#0.9.0"
    assert [(file.as_posix(), body["version"]) for file, body in package.resources] == [("ValueSet-x.json", "0.9.0")]

    (tmp_path / "package.json").write_text(json.dumps({"name": NAME, "version": "1.0.0", "fhirVersions": ["5.0.0"]}))
    assert is_package(tmp_path)  # a FHIR package's manifest: read_package says what is wrong with it
    with pytest.raises(LoadError, match=rf"^{NAME}#1\.0\.0: package\.json: is a package for FHIR 5\.0\.0"):
        read_package(tmp_path)


# The real package, through the command and the API, on both databases


@dataclass
class Loaded:
    client: httpx.Client
    before: httpx.Response  # a Questionnaire using an SDC extension that no shipped file defines, before the load
    done: subprocess.CompletedProcess[str]  # fhir-server load of the package as npm installed it
    again: subprocess.CompletedProcess[str]  # the same load a second time
    seconds: float


@pytest.fixture(scope="module")
def sdc(backend: str) -> Iterator[Loaded]:
    """A database and server of this module's own: the package adds SearchParameters, CapabilityStatements and
    Questionnaires that the other tests' shared database should not see."""
    require_node("../hl7.fhir.uv.sdc")  # the harness looks in node_modules/@medplum/: this is node_modules/<SDC>
    database = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    with (
        database as url,
        ServerThread(Settings(database_url=url, _env_file=None), backend) as running,
        httpx.Client(base_url=running.fhir_base, timeout=60, headers={"Accept": "application/fhir+json"}) as c,
    ):
        before = post(c, "/Questionnaire", with_item_media("before"))
        started = time.monotonic()
        done = load(url, SDC)
        seconds = time.monotonic() - started
        yield Loaded(c, before, done, load(url, SDC), seconds)


def test_the_package_loads_as_published_and_makes_its_extensions_known(sdc):
    print(f"\nfhir-server load {SDC.name}: exit {sdc.done.returncode} in {sdc.seconds:.1f} s: {sdc.done.stdout}")
    assert sdc.done.returncode == 0, sdc.done.stderr
    assert "130 stored, 0 already current, 53 skipped" in sdc.done.stdout
    assert sdc.again.returncode == 0 and "0 stored, 130 already current" in sdc.again.stdout
    assert sdc.before.status_code == 400 and "could not be found" in sdc.before.text, sdc.before.text
    assert post(sdc.client, "/Questionnaire", with_item_media("after")).status_code == 201
    wrong = with_item_media("wrong")
    wrong["item"][0]["extension"][0] = {"url": ITEM_MEDIA, "valueString": "faces.png"}
    refused = post(sdc.client, "/Questionnaire", wrong)
    assert refused.status_code == 400 and "does not allow a value of type String" in refused.text, refused.text


SHIPPED = sorted(QUESTIONNAIRES.glob("*/questionnaire.json"))
VALID = [example for example in all_examples() if example.path.name.startswith("valid-")]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("profile", QUESTIONNAIRE_PROFILES, ids=lambda url: url.rsplit("/", 1)[-1])
def test_our_questionnaires_meet_the_sdc_profiles(sdc, path, profile):
    """Every SDC Questionnaire profile, claimed or not: each is met (ycors/ycsrs extract nothing and do not claim
    sdc-questionnaire-extr-obsn, which they meet all the same).  Since 1.0.1 this includes sdc-2: a versioned
    Questionnaire says how its versions compare (semver, R5's versionAlgorithm as an extension)."""
    questionnaire = json.loads(path.read_text())
    assert SEMVER in questionnaire["extension"]
    assert profile_errors(sdc, questionnaire, profile) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_our_questionnaires_claim_what_they_use_and_the_claims_are_checked(sdc, path):
    """meta.profile names the SDC profiles whose features each Questionnaire uses; with the package loaded a plain
    $validate checks them (no "not known to this server" warning), and a copy that breaks one is refused on create."""
    questionnaire = json.loads(path.read_text())
    claimed = questionnaire["meta"]["profile"]
    text = path.read_text()
    used = [SDC_SD + "sdc-questionnaire", SDC_SD + "sdc-questionnaire-render", SDC_SD + "sdc-questionnaire-behave"]
    used += [SDC_SD + "sdc-questionnaire-extr-obsn"] if "observationExtract" in text else []
    assert claimed == used
    answer = post(sdc.client, "/Questionnaire/$validate", questionnaire)
    assert answer.status_code == 200, answer.text
    assert [i for i in answer.json()["issue"] if i["severity"] != "information"] == [], answer.text

    broken = {**questionnaire, "id": None, "url": f"{questionnaire['url']}-broken-{uuid.uuid4().hex[:8]}"}
    broken["extension"] = [e for e in questionnaire["extension"] if e != SEMVER]  # sdc-2, of every SDC profile
    refused = post(sdc.client, "/Questionnaire", {k: v for k, v in broken.items() if v is not None})
    assert refused.status_code in (400, 422) and "sdc-2" in refused.text, refused.text


@pytest.mark.parametrize("example", VALID, ids=lambda e: e.name)
def test_our_valid_example_responses_meet_sdc_questionnaireresponse(sdc, example):
    profile = SDC_SD + "sdc-questionnaireresponse"
    assert profile_errors(sdc, example.for_patient("sdc-example"), profile) == []


# Helpers


def profile_errors(sdc: Loaded, resource: dict[str, Any], profile: str) -> list[str]:
    """The errors of ``$validate?profile=``."""
    answer = post(sdc.client, f"/{resource['resourceType']}/$validate?profile={profile}", resource)
    assert answer.status_code == 200, answer.text
    return [i["diagnostics"] for i in answer.json()["issue"] if i["severity"] in ("error", "fatal")]


def with_item_media(tag: str) -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire",
        "url": f"http://example.org/fhir/Questionnaire/media-{tag}-{uuid.uuid4().hex[:8]}",
        "status": "draft",
        "item": [
            {
                "linkId": "mood",
                "text": "Which face is yours today?",
                "type": "string",
                "extension": [{"url": ITEM_MEDIA, "valueAttachment": {"contentType": "image/png", "url": "faces.png"}}],
            }
        ],
    }
