"""Content packs: a licensed site's exact instrument wording, kept out of the repository.

A pack is a folder with ``pack.json`` (``name``, ``versionSuffix``, ``licensee``) and one overlay per instrument
(``{"questionnaire": url, "version": "1.0.0", "text": {linkId: text}, "copyright": optional}``).  Applying it
gives a new Questionnaire version (``1.0.1-<suffix>`` of the shipped 1.0.1) whose items carry the licensed text; the
shipped version stays as it is.

The shipped Questionnaires are versioned by semver (their ``versionAlgorithm``): a patch release changes no item, so
an overlay written for 1.0.0 applies to 1.0.1 and a site's licensed wording survives the upgrade; another minor or
major version may change items and needs an overlay of its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_server.library.errors import LoadError


@dataclass
class ContentPack:
    folder: Path
    name: str
    version_suffix: str
    licensee: str
    overlays: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)


def read_pack(folder: Path) -> ContentPack:
    manifest_path = folder / "pack.json"
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise LoadError(f"{manifest_path}: cannot read the content pack manifest ({exc})") from None
    suffix = manifest.get("versionSuffix")
    if not isinstance(suffix, str) or not suffix.replace("-", "").isalnum():
        raise LoadError(f"{manifest_path}: 'versionSuffix' must be letters, digits and '-'")
    pack = ContentPack(folder, str(manifest.get("name", folder.name)), suffix, str(manifest.get("licensee", "")))
    for path in sorted(folder.glob("*.json")):
        if path.name == "pack.json":
            continue
        try:
            pack.overlays.append((path, orjson.loads(path.read_bytes())))
        except orjson.JSONDecodeError as exc:
            raise LoadError(f"{path}: not valid JSON ({exc})") from None
    return pack


def apply_pack(questionnaire: dict[str, Any], overlay: dict[str, Any], pack: ContentPack) -> dict[str, Any]:
    if overlay.get("version") is not None and not _same_release(str(overlay["version"]), questionnaire["version"]):
        raise ValueError(
            f"the overlay is for version {overlay.get('version')}, the library has {questionnaire['version']}"
        )
    texts = overlay.get("text") or {}
    if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
        raise ValueError("'text' must map linkIds to strings")
    licensed = copy.deepcopy(questionnaire)
    unused = set(texts)

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items:
            if item.get("linkId") in texts:
                item["text"] = texts[item["linkId"]]
                unused.discard(item["linkId"])
            walk(item.get("item") or [])

    walk(licensed.get("item") or [])
    if unused:
        raise ValueError(f"linkIds not in the Questionnaire: {', '.join(sorted(unused))}")
    licensed["version"] = f"{questionnaire['version']}-{pack.version_suffix}"
    # One id per licensed version, as the shipped ones have (srs-1.0.1): an upgrade stores a resource beside the last.
    licensed["id"] = f"{questionnaire.get('id', 'questionnaire')}-{licensed['version']}"[:64]
    if overlay.get("copyright"):
        licensed["copyright"] = overlay["copyright"]
    licensed["copyright"] = f"{licensed.get('copyright', '')} Licensed wording loaded for {pack.licensee}.".strip()
    return licensed


def _same_release(overlay: str, shipped: str) -> bool:
    """Semver major.minor agree (1.0.0 and 1.0.1): the items an overlay names are the same."""
    return overlay.split(".")[:2] == shipped.split(".")[:2]
