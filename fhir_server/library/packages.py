"""FHIR NPM packages (implementation guides) for ``fhir-server load``: read from a ``.tgz`` or an unpacked folder,
never from the network, and stored through the library's conditional create (``engine/library_sync.py``).

The layout is the FHIR package specification's (confluence.hl7.org "FHIR NPM Package Spec"): ``package/package.json``
(``name``, ``version``, ``fhirVersions``), one resource per ``package/*.json``, an optional ``package/.index.json``
listing each file's resourceType, and examples under ``package/example/``.  A package that ``npm install`` put in
``node_modules`` has the same files without the ``package/`` folder (npm strips the tarball's top folder), so a folder
whose own ``package.json`` is a FHIR package's manifest is read as one too.  Only conformance resources are stored:
they are what the validator and the terminology look up (an extension's definition, a profile, a value set);
examples and other resources are counted as skipped, never written into the clinical data.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server import fhirjson
from fhir_server.errors import FhirError
from fhir_server.library.errors import LoadError

if TYPE_CHECKING:
    from fhir_server.engine.interactions import Interactions
    from fhir_server.engine.library_sync import SyncSummary

CONFORMANCE_TYPES = frozenset(
    {
        "StructureDefinition",
        "ValueSet",
        "CodeSystem",
        "SearchParameter",
        "ConceptMap",
        "NamingSystem",
        "OperationDefinition",
        "CapabilityStatement",
        "ImplementationGuide",
        "Questionnaire",
    }
)
MANIFEST = "package/package.json"
TOP = "package/"  # where a tarball, or a folder it was unpacked into, holds the files; npm's installed copy: ""
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    # What to store, in order, each with its file inside the package (package/StructureDefinition-x.json; in
    # npm's installed copy StructureDefinition-x.json)
    resources: list[tuple[Path, dict[str, Any]]]
    skipped: int  # examples and resources of other types

    @property
    def label(self) -> str:
        """How errors and the summary name it, as the FHIR tooling does: ``hl7.fhir.uv.sdc#3.0.0``."""
        return f"{self.name}#{self.version}"


def is_package(path: Path) -> bool:
    """A ``.tgz`` (any tarball is taken for a package), a folder holding ``package/package.json``, or npm's
    installed copy of a package: a folder whose ``package.json`` is a FHIR package's manifest."""
    if path.is_file():
        return path.name.endswith((".tgz", ".tar.gz"))
    return path.is_dir() and ((path / MANIFEST).is_file() or _is_fhir_manifest(path / "package.json"))


def _is_fhir_manifest(file: Path) -> bool:
    """A ``package.json`` of a FHIR package, not of a Node project: only FHIR packages say their FHIR versions
    (``fhir-version-list`` before ``fhirVersions`` existed).  Whether they are R4 is ``read_package``'s to say,
    with a message, rather than this folder being taken for a library folder."""
    try:
        manifest = orjson.loads(file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return (
        type(manifest) is dict
        and type(manifest.get("name")) is str
        and type(manifest.get("version")) is str
        and ("fhirVersions" in manifest or "fhir-version-list" in manifest)
    )


def read_package(path: Path) -> Package:
    """The package at ``path``, checked: its manifest, its FHIR version, each conformance resource parsed."""
    with _files(path) as (top, names, read):
        manifest_file, index_file, examples = f"{top}package.json", f"{top}.index.json", f"{top}example"
        here = top.rstrip("/") or "."  # the folder of the package's resources, as PurePosixPath.parent says it
        if manifest_file not in names:
            raise LoadError(f"{path}: {manifest_file}: not found; is this a FHIR package?")
        manifest = _json(read(manifest_file), str(path), manifest_file)
        name, version = manifest.get("name"), manifest.get("version")
        if type(name) is not str or type(version) is not str or not name or not version:
            raise LoadError(f"{path}: {manifest_file}: needs a 'name' and a 'version'")
        label = f"{name}#{version}"
        _check_fhir_version(manifest, label, manifest_file)
        types = _indexed_types(top, names, read)
        resources: list[tuple[Path, dict[str, Any]]] = []
        skipped = 0
        for file in names:
            parent = PurePosixPath(file).parent.as_posix()
            if not file.endswith(".json") or file in (manifest_file, index_file):
                continue
            if parent == examples:
                skipped += 1
                continue
            if parent != here:  # other/, openapi/, xml/...: documentation, not resources
                continue
            if file in types and types[file] not in CONFORMANCE_TYPES:
                skipped += 1  # the index says what it is: no need to parse it
                continue
            resource = _json(read(file), label, file)
            if resource.get("resourceType") not in CONFORMANCE_TYPES:
                skipped += 1
                continue
            resources.append((Path(file), _canonical(resource, version, label, file)))
    resources.sort(key=lambda entry: (_rank(entry[1]), entry[0].as_posix()))
    return Package(name, version, resources, skipped)


@contextmanager
def _files(path: Path) -> Iterator[tuple[str, list[str], Callable[[str], bytes]]]:
    """Where the package's files are (``TOP``, or ``""`` in npm's installed copy), their names from there, and a
    reader; a tarball is read in place, never extracted.  The names come in the tarball's order: reading a gzip
    stream backwards decompresses it again from the start (hl7.fhir.r4.core read in name order took minutes
    instead of seconds)."""
    if path.is_dir():
        # npm's copy only when the folder is not an unpacked tarball: a package/package.json says it is one
        top = "" if not (path / MANIFEST).is_file() and (path / "package.json").is_file() else TOP
        folder = path / top
        # The package's own files and its examples; xml/, openapi/, other/... are never read, so not listed
        # (npm's copy may also hold a node_modules/ of its own).
        names = sorted(
            f"{top}{file.relative_to(folder).as_posix()}"
            for where in (folder, folder / "example")
            if where.is_dir()
            for file in where.iterdir()
            if file.is_file()
        )
        yield top, names, lambda name: (path / name).read_bytes()
        return
    try:
        with tarfile.open(path, "r:*") as archive:
            # Regular files only: a link in a tarball could point outside it, and nothing here needs one.
            members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}

            def read(name: str) -> bytes:
                handle = archive.extractfile(members[name])
                return handle.read() if handle is not None else b""

            yield TOP, list(members), read
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:  # a truncated or corrupt download
        raise LoadError(f"{path}: not a readable package tarball ({exc})") from None


def _json(data: bytes, label: str, file: str) -> dict[str, Any]:
    try:
        value = fhirjson.parse(data)
    except FhirError as exc:
        raise LoadError(f"{label}: {file}: {exc.issues[0].diagnostics}") from None
    if type(value) is not dict:
        raise LoadError(f"{label}: {file}: not a JSON object")
    return value


def _check_fhir_version(manifest: dict[str, Any], label: str, manifest_file: str) -> None:
    """This server is R4 (4.0.x): an R5 or STU3 package's definitions would describe other elements.  Packages
    before the ``fhirVersions`` field said it in ``fhir-version-list``; a package listing several versions is
    accepted when R4 is one of them (its publisher says it works on R4)."""
    versions = manifest.get("fhirVersions") or manifest.get("fhir-version-list")
    if type(versions) is not list or not all(type(v) is str for v in versions) or not versions:
        raise LoadError(f"{label}: {manifest_file}: says no 'fhirVersions'; this server loads FHIR R4 (4.0.x) packages")
    if not any(v == "4.0" or v.startswith("4.0.") for v in versions):
        raise LoadError(
            f"{label}: {manifest_file}: is a package for FHIR {', '.join(versions)}; "
            "this server is FHIR R4 and loads only 4.0.x packages"
        )


def _indexed_types(top: str, names: list[str], read: Callable[[str], bytes]) -> dict[str, str]:
    """``.index.json``'s file → resourceType, when the package has one (it lets the resources of other types be
    skipped unread; a broken index is ignored, every file is then read)."""
    index = f"{top}.index.json"
    if index not in names:
        return {}
    try:
        listed = orjson.loads(read(index))
        return {
            f"{top}{entry['filename']}": entry["resourceType"]
            for entry in listed.get("files") or ()
            if type(entry.get("filename")) is str and type(entry.get("resourceType")) is str
        }
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return {}


def _canonical(resource: dict[str, Any], version: str, label: str, file: str) -> dict[str, Any]:
    """The conditional create identifies a resource by url and version, so both are needed."""
    if type(resource.get("url")) is not str:
        raise LoadError(f"{label}: {file}: a package {resource['resourceType']} needs a 'url'")
    if "version" not in resource:
        # Resources of an IG share its business version (the IG Publisher writes it into each); one without is
        # taken to be of the package's version, so that loading the next version of the package stores it anew.
        return {**resource, "version": version}
    if type(resource["version"]) is not str:
        raise LoadError(f"{label}: {file}: 'version' must be a string")
    return resource


def _rank(resource: dict[str, Any]) -> int:
    """Storing order: what others use goes first.  Value sets include code systems; a profile may use the
    package's extensions (and the server validates every resource it stores against the definitions it holds)."""
    kind = resource["resourceType"]
    if kind == "CodeSystem":
        return 0
    if kind == "ValueSet":
        return 1
    if kind == "StructureDefinition":
        return 2 if resource.get("type") == "Extension" else 3
    return 4


def store_package(
    fhir: Interactions, package: Package, on_progress: Callable[[int, int], None] | None = None
) -> SyncSummary:
    """Store the package's resources, each through ``sync_resources`` (so the same idempotent conditional create,
    and the same refusal of changed content under an unchanged version); errors name the package and the file."""
    from fhir_server.engine.library_sync import SyncSummary, sync_resources

    summary = SyncSummary()
    total = len(package.resources)
    for number, (file, resource) in enumerate(package.resources, start=1):
        try:
            done = sync_resources(fhir, [(file, _with_free_id(fhir, resource, file))])
        except LoadError as exc:
            raise LoadError(f"{package.label}: {exc}") from None
        except FhirError as exc:
            errors = [i for i in exc.issues if i.severity in ("error", "fatal")] or exc.issues
            shown = "; ".join(i.diagnostics for i in errors[:3])
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise LoadError(f"{package.label}: {file}: refused: {shown}{more}") from None
        summary.created += done.created
        summary.unchanged += done.unchanged
        if on_progress:
            on_progress(number, total)
    return summary


def _with_free_id(fhir: Interactions, resource: dict[str, Any], file: Path) -> dict[str, Any]:
    """``sync_resources`` names a resource ``<id>-<version>``; two packages may well both hold a ``patient`` of
    version 1.0.0 (or long ids may agree in their first 64 characters).  When that id is taken by another
    canonical, the id gets a hash of the url instead, so the second package does not fail on the first's row."""
    from fhir_server.engine.library_sync import resource_id

    wanted = resource_id(resource)
    if not _FHIR_ID.match(wanted):  # the version becomes part of the id (a semver "+build", say, cannot)
        raise LoadError(f"{file}: {wanted!r} is not a valid resource id (from its id and version)")
    stored = fhir.repo.read(resource["resourceType"], wanted)
    if stored is None:
        return resource
    held = fhirjson.loads_stored(stored.content) if stored.content else {}
    if (held.get("url"), held.get("version")) == (resource["url"], resource["version"]):
        return resource
    digest = hashlib.sha256(resource["url"].encode()).hexdigest()[:10]
    base = str(resource.get("id") or resource["url"].rstrip("/").rsplit("/", 1)[-1])
    return {**resource, "id": f"{base[:40]}-{digest}"}
