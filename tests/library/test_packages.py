"""``fhir-server load`` of FHIR packages (implementation guides): an IG's extensions and profiles become known to
the validator; examples and other resources are skipped; loading twice stores nothing new; a package for another
FHIR version stores nothing.

Every resource here is written for these tests (a small extension, a Patient profile whose snapshot holds only the
elements it needs, a value set), packed in the layout of a FHIR package; no HL7 file is copied.  The command runs
as its own process against the test database, as an operator runs it next to a running server.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.library import LoadError
from fhir_server.library.packages import read_package
from tests.api.fhir import post

IG = "http://hl7.org/fhir/uv/example-ig"
NAME = "hl7.fhir.uv.example-ig"
SD = "http://hl7.org/fhir/StructureDefinition/"


def _element(path: str, min_: int, max_: str, base: tuple[int, str], *types: str, **extra: Any) -> dict[str, Any]:
    """A snapshot ElementDefinition: a generated snapshot carries each element's definition and base cardinality."""
    out: dict[str, Any] = {
        "id": path,
        "path": path,
        "definition": f"{path} (written for this test)",
        "min": min_,
        "max": max_,
        "base": {"path": path, "min": base[0], "max": base[1]},
    }
    if types:
        out["type"] = [{"code": t} for t in types]
    return {**out, **extra}


def extension(uid: str) -> dict[str, Any]:
    url = f"{IG}/StructureDefinition/preferred-pronoun-{uid}"
    return {  # no version: it takes the package's
        "resourceType": "StructureDefinition",
        "id": f"preferred-pronoun-{uid}",
        "url": url,
        "name": "PreferredPronoun",
        "status": "active",
        "fhirVersion": "4.0.1",
        "kind": "complex-type",
        "abstract": False,
        "context": [{"type": "element", "expression": "Patient"}],
        "type": "Extension",
        "baseDefinition": f"{SD}Extension",
        "derivation": "constraint",
        "snapshot": {
            "element": [
                _element("Extension", 0, "1", (0, "*")),
                _element("Extension.url", 1, "1", (1, "1"), "uri", fixedUri=url),
                _element("Extension.value[x]", 1, "1", (0, "1"), "string"),
            ]
        },
    }


def profile(uid: str) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "id": f"dated-patient-{uid}",
        "url": f"{IG}/StructureDefinition/dated-patient-{uid}",
        "version": "1.0.0",
        "name": "DatedPatient",
        "status": "active",
        "fhirVersion": "4.0.1",
        "kind": "resource",
        "abstract": False,
        "type": "Patient",
        "baseDefinition": f"{SD}Patient",
        "derivation": "constraint",
        "snapshot": {
            "element": [
                _element("Patient", 0, "*", (0, "*")),
                _element("Patient.birthDate", 1, "1", (0, "1"), "date"),
            ]
        },
    }


def value_set(uid: str) -> dict[str, Any]:
    return {
        "resourceType": "ValueSet",
        "id": f"pronouns-{uid}",
        "url": f"{IG}/ValueSet/pronouns-{uid}",
        "version": "1.0.0",
        "name": "Pronouns",
        "status": "active",
        "compose": {"include": [{"system": "http://example.org/pronouns", "concept": [{"code": "they"}]}]},
    }


def build_package(
    folder: Path, uid: str, *, fhir_versions: list[str] | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """A package tarball: the three conformance resources, a Patient (another type) and an example."""
    files: dict[str, Any] = {
        "package/package.json": {
            "name": NAME,
            "version": "1.0.0",
            "fhirVersions": fhir_versions or ["4.0.1"],
            "dependencies": {"hl7.fhir.r4.core": "4.0.1"},
        },
        # Profile before extension in file order: the loader orders them
        f"package/StructureDefinition-dated-patient-{uid}.json": profile(uid),
        f"package/StructureDefinition-preferred-pronoun-{uid}.json": extension(uid),
        f"package/ValueSet-pronouns-{uid}.json": value_set(uid),
        "package/Patient-in-the-root.json": {"resourceType": "Patient", "id": "in-the-root"},
        "package/example/Patient-example.json": {"resourceType": "Patient", "id": "example"},
        "package/other/spec.internals": {"not": "a resource"},
        **(extra or {}),
    }
    files["package/.index.json"] = {
        "index-version": 1,
        "files": [
            {"filename": name.removeprefix("package/"), "resourceType": body["resourceType"], "id": body["id"]}
            for name, body in files.items()
            if name.count("/") == 1 and "resourceType" in body
        ],
    }
    archive = folder / f"{NAME}-{uid}.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, body in files.items():
            data = json.dumps(body).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def load(database_url: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "fhir_server", "load", *map(str, paths)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def total(client: httpx.Client, resource_type: str, url: str) -> int:
    return client.get(f"/{resource_type}", params={"url": url, "_summary": "count"}).json()["total"]


# Through the command and the API, on both databases


def test_a_loaded_package_makes_its_extension_and_profile_known(server, client, database_url, uid, tmp_path):
    ext, dated = extension(uid)["url"], profile(uid)["url"]
    with_pronoun = {"resourceType": "Patient", "extension": [{"url": ext, "valueString": "they"}]}
    refused = post(client, "/Patient", with_pronoun)
    assert refused.status_code == 400 and "could not be found" in refused.text

    done = load(database_url, build_package(tmp_path, uid))
    assert done.returncode == 0, done.stderr
    assert f"{NAME}#1.0.0: 3 stored, 0 already current, 2 skipped (examples, other types)" in done.stdout
    assert f"{NAME}#1.0.0 [" in done.stderr  # the progress bar

    assert post(client, "/Patient", with_pronoun).status_code == 201
    wrong_type = {"resourceType": "Patient", "extension": [{"url": ext, "valueInteger": 1}]}
    assert post(client, "/Patient", wrong_type).status_code == 400

    claiming = {"resourceType": "Patient", "meta": {"profile": [dated]}}
    missing = post(client, "/Patient", claiming)
    assert missing.status_code == 400, missing.text
    assert "Patient.birthDate: minimum required = 1" in missing.text and dated in missing.text
    assert post(client, "/Patient", {**claiming, "birthDate": "1980-02-29"}).status_code == 201

    stored = client.get("/StructureDefinition", params={"url": ext}).json()["entry"][0]["resource"]
    assert stored["version"] == "1.0.0"  # the package's
    assert total(client, "ValueSet", value_set(uid)["url"]) == 1
    assert client.get("/Patient/in-the-root").status_code == 404  # neither other types nor examples are stored

    again = load(database_url, build_package(tmp_path, uid))
    assert again.returncode == 0, again.stderr
    assert f"{NAME}#1.0.0: 0 stored, 3 already current, 2 skipped (examples, other types)" in again.stdout
    assert total(client, "StructureDefinition", dated) == 1


def test_a_package_for_another_fhir_version_stores_nothing(server, client, database_url, uid, tmp_path):
    done = load(database_url, build_package(tmp_path, uid, fhir_versions=["5.0.0"]))
    assert done.returncode == 1
    assert f"error: {NAME}#1.0.0: package/package.json: is a package for FHIR 5.0.0" in done.stderr
    assert "loads only 4.0.x packages" in done.stderr
    assert total(client, "StructureDefinition", extension(uid)["url"]) == 0
    assert total(client, "ValueSet", value_set(uid)["url"]) == 0


def test_a_resource_the_server_refuses_names_the_package_and_the_file(server, client, database_url, uid, tmp_path):
    broken = profile(uid) | {"id": f"broken-{uid}", "url": f"{IG}/StructureDefinition/broken-{uid}"}
    broken["snapshot"]["element"].append(_element("Patient.favouriteColour", 0, "1", (0, "1"), "string"))
    file = f"package/StructureDefinition-broken-{uid}.json"
    done = load(database_url, build_package(tmp_path, uid, extra={file: broken}))
    assert done.returncode == 1
    assert f"error: {NAME}#1.0.0: {file}: refused: " in done.stderr
    assert "Patient.favouriteColour is not an element of Patient" in done.stderr


def test_changed_content_under_the_same_version_is_refused(server, client, database_url, uid, tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    assert load(database_url, build_package(first, uid)).returncode == 0
    changed = value_set(uid) | {"title": "Changed without a new version"}
    done = load(database_url, build_package(tmp_path, uid, extra={f"package/ValueSet-pronouns-{uid}.json": changed}))
    assert done.returncode == 1
    assert f"error: {NAME}#1.0.0: package/ValueSet-pronouns-{uid}.json: ValueSet" in done.stderr
    assert "a changed artifact needs a new version" in done.stderr


def test_two_packages_may_use_the_same_id_and_version(server, client, database_url, uid, tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    assert load(database_url, build_package(first, uid)).returncode == 0
    other = value_set(uid) | {"url": f"http://example.org/fhir/ValueSet/pronouns-{uid}"}  # same id, same version
    done = load(database_url, build_package(tmp_path, uid, extra={f"package/ValueSet-pronouns-{uid}.json": other}))
    assert done.returncode == 0, done.stderr
    assert "1 stored, 2 already current" in done.stdout
    ids = {
        client.get("/ValueSet", params={"url": v["url"]}).json()["entry"][0]["resource"]["id"]
        for v in (value_set(uid), other)
    }
    assert len(ids) == 2 and f"pronouns-{uid}-1.0.0" in ids


# Reading a package (no database)


def test_an_unpacked_folder_reads_as_the_tarball(tmp_path):
    archive = build_package(tmp_path, "u1")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    packed, unpacked = read_package(archive), read_package(tmp_path / "unpacked")
    assert packed == unpacked
    assert packed.label == f"{NAME}#1.0.0" and packed.skipped == 2
    # Value sets first, then extensions before the profiles that may use them
    assert [(r["resourceType"], r.get("type")) for _, r in packed.resources] == [
        ("ValueSet", None),
        ("StructureDefinition", "Extension"),
        ("StructureDefinition", "Patient"),
    ]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"name": NAME, "version": "1.0.0"}, "says no 'fhirVersions'"),
        ({"name": NAME, "version": "1.0.0", "fhirVersions": ["3.0.2"]}, "is a package for FHIR 3.0.2"),
        ({"name": NAME, "fhirVersions": ["4.0.1"]}, "needs a 'name' and a 'version'"),
    ],
)
def test_a_manifest_that_does_not_fit_is_refused(tmp_path, manifest, message):
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "package.json").write_text(json.dumps(manifest))
    with pytest.raises(LoadError, match=message):
        read_package(tmp_path)


def test_a_broken_file_is_named(tmp_path):
    package = tmp_path / "package"
    package.mkdir()
    (package / "package.json").write_text(json.dumps({"name": NAME, "version": "2.0.0", "fhirVersions": ["4.0.1"]}))
    (package / "ValueSet-x.json").write_text('{"resourceType": "ValueSet", "url": ')
    with pytest.raises(LoadError, match=rf"^{NAME}#2\.0\.0: package/ValueSet-x\.json: Malformed JSON"):
        read_package(tmp_path)
    (package / "ValueSet-x.json").write_text(json.dumps({"resourceType": "ValueSet", "status": "draft"}))
    with pytest.raises(LoadError, match=r"package/ValueSet-x\.json: a package ValueSet needs a 'url'"):
        read_package(tmp_path)
    (tmp_path / "truncated.tgz").write_bytes(b"\x1f\x8b\x08\x00broken")
    with pytest.raises(LoadError, match=r"truncated\.tgz: not a readable package tarball"):
        read_package(tmp_path / "truncated.tgz")
