"""The languages of a Questionnaire: FHIR's ``translation`` extension on each displayed text, read and checked.

A translation sits on the primitive's underscore element (FHIR R4 §2.1.0.4 "Extensions on primitive types"):

    "text": "Relationship",
    "_text": {"extension": [{"url": TRANSLATION, "extension": [
        {"url": "lang", "valueCode": "fr"}, {"url": "content", "valueString": "Relation"}]}]}

The Questionnaire's ``language`` is the source text's language; the languages it offers are that one and every
``lang`` on its ``title``.  Loading checks that an offered language is offered whole: a form half in French and
half in English is worse than an English one (a client reads the untranslated line in a language they may not
read, and a clinician cannot tell which wording was shown), so a missing translation is a load error naming the
file and the element.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir_server.library.errors import LoadError

TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
# Scripts written right to left, by primary language subtag (BCP 47): the page needs dir="rtl" for them.
RIGHT_TO_LEFT = frozenset({"ar", "fa", "he", "ur", "ps", "sd", "ug", "yi", "dv", "ku"})


@dataclass(frozen=True)
class Text:
    """One displayed text: the element holding it (``owner[key]``) and how an error names it."""

    owner: dict[str, Any]
    key: str
    label: str  # "title", "item 'relationship' text", "item 'wai-sr-1' option '2' display"


def displayed_texts(questionnaire: dict[str, Any]) -> Iterator[Text]:
    """Every text a person filling in (or reading) the form is shown: title, description, each item's text and
    prefix, and the labels of answer options (a coding's display, a string option).  Read-only score items are
    included: a renderer may show them, and the clinician reads them in the response."""
    for key in ("title", "description"):
        if isinstance(questionnaire.get(key), str):
            yield Text(questionnaire, key, key)
    yield from _item_texts(questionnaire.get("item") or [])


def _item_texts(items: list[dict[str, Any]]) -> Iterator[Text]:
    for item in items:
        link_id = item.get("linkId")
        for key in ("prefix", "text"):
            if isinstance(item.get(key), str):
                yield Text(item, key, f"item '{link_id}' {key}")
        for index, option in enumerate(item.get("answerOption") or []):
            coding = option.get("valueCoding")
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                name = coding.get("code", index)
                yield Text(coding, "display", f"item '{link_id}' option '{name}' display")
            elif isinstance(option.get("valueString"), str):
                yield Text(option, "valueString", f"item '{link_id}' option {index + 1} text")
        yield from _item_texts(item.get("item") or [])


def translations(owner: dict[str, Any], key: str, where: str = "") -> dict[str, str]:
    """lang → content of the translations on ``owner['_' + key]``.  LoadError (prefixed with ``where``) for a
    translation without its lang or content, or two for one language: which one a form shows must not depend on
    the order of a JSON array."""
    found: dict[str, str] = {}
    element = owner.get(f"_{key}")
    extensions = element.get("extension") if isinstance(element, dict) else None
    for ext in extensions or []:
        if not isinstance(ext, dict) or ext.get("url") != TRANSLATION:
            continue
        parts = {p.get("url"): p for p in ext.get("extension") or [] if isinstance(p, dict)}
        lang = (parts.get("lang") or {}).get("valueCode")
        content = (parts.get("content") or {}).get("valueString")
        if not isinstance(lang, str) or not lang:
            raise LoadError(f"{where}a translation of {key} without its 'lang' (valueCode)")
        if not isinstance(content, str) or not content.strip():
            raise LoadError(f"{where}the '{lang}' translation of {key} has no 'content' (valueString)")
        if lang in found:
            raise LoadError(f"{where}two '{lang}' translations of {key}")
        found[lang] = content
    return found


def source_language(questionnaire: dict[str, Any]) -> str:
    """The language of the Questionnaire's own texts; a Questionnaire that does not say is taken to be English
    (every Questionnaire this library ships says so)."""
    return str(questionnaire.get("language") or "en")


def languages(questionnaire: dict[str, Any]) -> list[str]:
    """What the Questionnaire offers: its own language first, then each language its title is translated into,
    in the order they appear."""
    offered = [source_language(questionnaire)]
    for lang in _lenient(questionnaire, "title"):
        if lang not in offered:
            offered.append(lang)
    return offered


def match(questionnaire: dict[str, Any], wanted: str | None) -> str:
    """The offered language to show for ``wanted`` (a BCP 47 tag): exact, else the same primary language
    (fr-CA → fr), else the Questionnaire's own."""
    offered = languages(questionnaire)
    if wanted:
        lowered = {lang.lower(): lang for lang in offered}
        if wanted.lower() in lowered:
            return lowered[wanted.lower()]
        primary = wanted.split("-")[0].lower()
        for lang in offered:
            if lang.split("-")[0].lower() == primary:
                return lang
    return offered[0]


def text(owner: dict[str, Any], key: str, language: str | None, source: str = "en") -> str:
    """``owner[key]`` in ``language``: its translation when there is one, else the source text ('' when the
    element is absent).  ``source`` is the Questionnaire's own language (no translation needed)."""
    original = owner.get(key)
    original = "" if original is None else str(original)
    if not language or language == source:
        return original
    return _lenient(owner, key).get(language, original)


def is_right_to_left(language: str) -> bool:
    return language.split("-")[0].lower() in RIGHT_TO_LEFT


def check(questionnaire: dict[str, Any], where: str) -> None:
    """Every translation well formed, and every displayed text translated into every language the Questionnaire
    offers.  LoadError naming ``where`` (the file) and the first element that fails."""
    prefix = f"{where}: "
    texts = list(displayed_texts(questionnaire))
    for shown in texts:
        _check_element(shown, prefix)
    source = source_language(questionnaire)
    for lang in languages(questionnaire)[1:]:
        if lang == source:
            continue
        for shown in texts:
            if lang not in translations(shown.owner, shown.key, prefix):
                raise LoadError(f"{prefix}no '{lang}' translation of {shown.label}")


def _check_element(shown: Text, prefix: str) -> None:
    try:
        translations(shown.owner, shown.key)
    except LoadError as exc:
        raise LoadError(f"{prefix}{shown.label}: {exc}") from None


def set_translation(owner: dict[str, Any], key: str, lang: str, content: str) -> None:
    """Add, or replace, the ``lang`` translation of ``owner[key]`` (a content pack's)."""
    element = owner.setdefault(f"_{key}", {})
    kept = [e for e in element.get("extension") or [] if not _is_translation_into(e, lang)]
    parts = [{"url": "lang", "valueCode": lang}, {"url": "content", "valueString": content}]
    element["extension"] = [*kept, {"url": TRANSLATION, "extension": parts}]


def drop_language(questionnaire: dict[str, Any], lang: str) -> None:
    """Remove every ``lang`` translation (a pack replaced English wording the shipped translation rendered)."""
    for shown in displayed_texts(questionnaire):
        element = shown.owner.get(f"_{shown.key}")
        if not isinstance(element, dict):
            continue
        element["extension"] = [e for e in element.get("extension") or [] if not _is_translation_into(e, lang)]
        if not element["extension"]:
            del element["extension"]
        if not element:
            del shown.owner[f"_{shown.key}"]


def _is_translation_into(ext: Any, lang: str) -> bool:
    if not isinstance(ext, dict) or ext.get("url") != TRANSLATION:
        return False
    return any(p.get("url") == "lang" and p.get("valueCode") == lang for p in ext.get("extension") or [])


def _lenient(owner: dict[str, Any], key: str) -> dict[str, str]:
    """Translations for display: a malformed one is skipped (the library refuses those at load; a Questionnaire
    stored by someone else is shown as well as it can be)."""
    try:
        return translations(owner, key)
    except LoadError:
        return {}
