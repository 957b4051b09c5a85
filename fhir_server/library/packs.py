"""Content packs: a licensed site's exact instrument wording, and translations, kept out of the repository.

A pack is a folder with ``pack.json`` (``name``, ``versionSuffix``, ``licensee``, optional ``note``) and one overlay
per instrument::

    {"questionnaire": url, "version": "1.0.2", "copyright": optional,
     "text": {linkId: English text},
     "translations": {lang: {"title": "...", "description": "...",
                             "items": {linkId: "text" | {"text": "...", "prefix": "...", "options": {code: label}}}}}}

``text`` replaces an item's English text (the licensed wording).  ``translations`` adds, or replaces, the FHIR
``translation`` extension (library/translations.py) per language: ``title`` and ``description`` of the
Questionnaire, and per linkId the item's ``text`` (a string is short for ``{"text": ...}``), its ``prefix`` and its
answer options' labels by code (a ``valueString`` option by its value).  Anchors and descriptions are ``display``
items with linkIds of their own (``relationship-lower``), so they are named like any item.  A language a pack adds
must be complete: loading checks it as it checks the shipped Questionnaires.  When a pack replaces an item's English
text and gives no translation of it into a language the shipped Questionnaire offers, that language is withdrawn
from the pack's version: the shipped translation renders the project's wording, not the licensed one.

Applying it gives a new Questionnaire version (``1.0.2-<suffix>`` of the shipped 1.0.2); the shipped version stays
as it is.

The shipped Questionnaires are versioned by semver (their ``versionAlgorithm``): a patch release changes no item, so
an overlay written for 1.0.0 applies to 1.0.2 and a site's licensed wording survives the upgrade; another minor or
major version may change items and needs an overlay of its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_server.library.errors import LoadError
from fhir_server.library.translations import drop_language, languages, set_translation


@dataclass
class ContentPack:
    folder: Path
    name: str
    version_suffix: str
    licensee: str
    note: str = ""  # what the pack is ("a sample for testing right-to-left rendering"), said in the copyright
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
    pack.note = str(manifest.get("note") or "")
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
    added = _translate(licensed, overlay.get("translations") or {}, replaced=set(texts))
    licensed["version"] = f"{questionnaire['version']}-{pack.version_suffix}"
    # One id per licensed version, as the shipped ones have (srs-1.0.2): an upgrade stores a resource beside the last.
    licensed["id"] = f"{questionnaire.get('id', 'questionnaire')}-{licensed['version']}"[:64]
    if overlay.get("copyright"):
        licensed["copyright"] = overlay["copyright"]
    notes = [licensed.get("copyright", "")]
    if texts:
        notes.append(f"Licensed wording loaded for {pack.licensee}.")
    if added:
        about = f": {pack.note}" if pack.note else ""
        notes.append(f"Translations ({', '.join(added)}) from the content pack {pack.name}{about}.")
    licensed["copyright"] = " ".join(n for n in notes if n).strip()
    return licensed


def _translate(questionnaire: dict[str, Any], wanted: Any, replaced: set[str]) -> list[str]:
    """Apply an overlay's ``translations``; the languages it adds or changes.  Mutates ``questionnaire``."""
    if not isinstance(wanted, dict):
        raise ValueError("'translations' must map languages to their texts")
    items = _items_by_link_id(questionnaire.get("item") or [])
    for lang in languages(questionnaire)[1:]:
        given = wanted.get(lang) if isinstance(wanted.get(lang), dict) else {}
        if any(link_id not in (given.get("items") or {}) for link_id in replaced):
            drop_language(questionnaire, lang)
    for lang, texts in wanted.items():
        if not isinstance(lang, str) or not lang or not isinstance(texts, dict):
            raise ValueError("'translations' must map languages to objects of texts")
        for key in ("title", "description"):
            if key in texts:
                set_translation(questionnaire, key, lang, _string(texts[key], f"{lang} {key}"))
        by_item = texts.get("items") or {}
        if not isinstance(by_item, dict):
            raise ValueError(f"translations '{lang}': 'items' must map linkIds to texts")
        unknown = sorted(set(by_item) - set(items))
        if unknown:
            raise ValueError(f"translations '{lang}': linkIds not in the Questionnaire: {', '.join(unknown)}")
        for link_id, given in by_item.items():
            _translate_item(items[link_id], lang, {"text": given} if isinstance(given, str) else given)
    return sorted(wanted)


def _translate_item(item: dict[str, Any], lang: str, given: Any) -> None:
    where = f"translations '{lang}' of item '{item.get('linkId')}'"
    if not isinstance(given, dict) or set(given) - {"text", "prefix", "options"}:
        raise ValueError(f"{where}: give a string, or an object of 'text', 'prefix' and 'options'")
    for key in ("text", "prefix"):
        if key in given:
            if key not in item:
                raise ValueError(f"{where}: the item has no {key} to translate")
            set_translation(item, key, lang, _string(given[key], where))
    options = given.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError(f"{where}: 'options' must map answer codes to labels")
    for name, label in options.items():
        target = _option(item, str(name))
        if target is None:
            raise ValueError(f"{where}: no answer option {name!r}")
        set_translation(*target, lang, _string(label, where))


def _option(item: dict[str, Any], name: str) -> tuple[dict[str, Any], str] | None:
    for option in item.get("answerOption") or []:
        coding = option.get("valueCoding")
        if isinstance(coding, dict) and str(coding.get("code")) == name:
            return coding, "display"
        if option.get("valueString") == name:
            return option, "valueString"
    return None


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: a translation must be a non-empty string")
    return value


def _items_by_link_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in items:
        found[str(item.get("linkId"))] = item
        found.update(_items_by_link_id(item.get("item") or []))
    return found


def _same_release(overlay: str, shipped: str) -> bool:
    """Semver major.minor agree (1.0.0 and 1.0.1): the items an overlay names are the same."""
    return overlay.split(".")[:2] == shipped.split(".")[:2]
