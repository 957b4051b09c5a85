"""Find instruments and terminology on disk, check them, and apply content packs.

A folder is an instrument when it holds ``questionnaire.json`` (and, when scored, ``scoring.json``); any other
``*.json`` file in a library folder is a terminology resource (CodeSystem, ValueSet, ConceptMap, ...).  Adding a
measure is adding a folder: no Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_server import fhirjson
from fhir_server.errors import FhirError
from fhir_server.library.errors import LoadError
from fhir_server.library.packs import ContentPack, apply_pack, read_pack
from fhir_server.library.translations import check as check_translations
from fhir_server.library.translations import languages as offered_languages
from fhir_server.reporting.indicators import Indicator, IndicatorError, check_codes, read_indicator
from fhir_server.scoring import texts as scoring_texts
from fhir_server.scoring.rules import RulesError, ScoringRules, load_rules
from fhir_server.validation import validate_resource


@dataclass(frozen=True)
class Instrument:
    id: str
    folder: Path
    questionnaire: dict[str, Any]
    rules: ScoringRules | None
    # texts.json: the Flag texts' translations (lang → flags, items, scores, concordance), scoring/texts.py
    texts: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.questionnaire["url"]

    @property
    def version(self) -> str:
        return self.questionnaire["version"]


@dataclass
class Library:
    instruments: list[Instrument] = field(default_factory=list)
    terminology: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    # Questionnaires rewritten by content packs, served as versions of their own (url|version-suffix).
    licensed: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    # Supervisors' indicators: FHIR Measures with how each is counted (reporting/indicators.py)
    indicators: list[Indicator] = field(default_factory=list)

    def rules_for(self, url: str) -> ScoringRules | None:
        return next((i.rules for i in self.instruments if i.url == url), None)

    def instrument(self, url: str) -> Instrument | None:
        return next((i for i in self.instruments if i.url == url), None)

    def questionnaire(self, url: str, version: str) -> dict[str, Any] | None:
        """A Questionnaire this library ships (or a content pack made), by url and version."""
        for _, questionnaire in self.licensed:
            if questionnaire["url"] == url and questionnaire["version"] == version:
                return questionnaire
        instrument = self.instrument(url)
        return instrument.questionnaire if instrument and instrument.version == version else None

    def preferred_version(self, url: str) -> str | None:
        """The version a response naming only the url means: a loaded content pack's, else the shipped one."""
        licensed = [q["version"] for _, q in self.licensed if q["url"] == url]
        if licensed:
            return licensed[-1]
        instrument = self.instrument(url)
        return instrument.version if instrument else None

    def resources(self) -> list[tuple[Path, dict[str, Any]]]:
        """Everything to store, terminology first (the Questionnaires' codes refer to it)."""
        shipped = [(i.folder / "questionnaire.json", i.questionnaire) for i in self.instruments]
        measures = [(i.folder / "measure.json", i.measure) for i in self.indicators]
        return [*self.terminology, *shipped, *self.licensed, *measures]

    def flag_text(self, code: str, english: str, language: str | None) -> str:
        """A stored Flag's text (``Flag.code.text``, English) in the clinician's ``language``: the instrument's
        translation, or the English when there is none (scoring/texts.py translate_flag)."""
        for instrument in self.instruments:
            rules = instrument.rules
            if rules is None:
                continue
            concordance = rules.concordance.flag.code if rules.concordance is not None else None
            # Instruments may share a Flag code (the CSRS raises the SRS's): the one whose message reads back
            if code == concordance or any(f.code == code for f in rules.flags):
                said = scoring_texts.translate_flag(rules, instrument.texts, code, english, language)
                if said != english:
                    return said
        return english

    def indicator(self, key: str) -> Indicator | None:
        """By id (its folder), by url, or by url|version."""
        return next((i for i in self.indicators if key in (i.id, i.url, f"{i.url}|{i.version}")), None)

    def repeated_codes(self) -> frozenset[str]:
        """Codes the scoring engine writes in more than one Observation of a response (a WAI-SR item or subscale
        mean is a component of its subscale's Observation and of the total's): reports count such a number once."""
        seen: dict[str, int] = {}
        for instrument in self.instruments:
            rules = instrument.rules
            if rules is None:
                continue
            by_id = {s.id: s for s in rules.scores}
            items = {i.linkId: i.code for i in rules.itemScores}
            for score in rules.scores:
                if score.observation != "own":
                    continue
                held = {score.code, *(items[i] for i in score.items if i in items)}
                held |= {by_id[c].code for c in score.components if c in by_id}
                for code in held:
                    seen[code] = seen.get(code, 0) + 1
        return frozenset(code for code, count in seen.items() if count > 1)

    def scored_codes(self) -> dict[str, str]:
        """Every fit-measures code a scored instrument writes and fit-flags code it raises → its abbreviation."""
        found: dict[str, str] = {}
        for instrument in self.instruments:
            if instrument.rules is None:
                continue
            rules = instrument.rules
            short = re.search(r"\(([^)]+)\)\s*$", str(instrument.questionnaire.get("title") or ""))
            name = short.group(1) if short else instrument.id.upper()  # "Outcome Rating Scale (ORS)": ORS
            for code in [*(i.code for i in rules.itemScores), *(s.code for s in rules.scores),
                         *(f.code for f in rules.flags)]:  # fmt: skip
                found.setdefault(code, name)
            if rules.concordance is not None:  # the gaps, and their Flag, scoring/concordance.py writes
                spec = rules.concordance
                for code in [*(p.code for p in (spec.total, *spec.domains)), spec.flag.code]:
                    found.setdefault(code, name)
        return found


def _read_resource(path: Path) -> dict[str, Any]:
    try:
        resource = fhirjson.parse(path.read_bytes())
        validate_resource(resource)
    except FhirError as err:
        raise LoadError(f"{path}: {err.issues[0].diagnostics}") from None
    for key in ("url", "version") if resource.get("resourceType") in _CANONICAL_TYPES else ():
        if not isinstance(resource.get(key), str):
            raise LoadError(f"{path}: a library {resource['resourceType']} needs a '{key}'")
    return resource


_CANONICAL_TYPES = {
    "Questionnaire", "CodeSystem", "ValueSet", "ConceptMap", "SearchParameter", "OperationDefinition", "Measure",
}  # fmt: skip


def _instrument(folder: Path) -> Instrument:
    questionnaire = _read_resource(folder / "questionnaire.json")
    if questionnaire.get("resourceType") != "Questionnaire":
        raise LoadError(f"{folder / 'questionnaire.json'}: must hold a Questionnaire")
    check_translations(questionnaire, str(folder / "questionnaire.json"))
    rules = None
    if (folder / "scoring.json").exists():
        try:
            rules = load_rules(folder / "scoring.json")
        except RulesError as exc:
            raise LoadError(str(exc)) from None
        if rules.questionnaire != questionnaire["url"]:
            raise LoadError(f"{folder / 'scoring.json'}: 'questionnaire' must be {questionnaire['url']}")
        link_ids = _link_ids(questionnaire.get("item") or [])
        missing = [i.linkId for i in rules.itemScores if i.linkId not in link_ids]
        missing += [s.linkId for s in rules.scores if s.linkId not in link_ids]
        if missing:
            raise LoadError(f"{folder / 'scoring.json'}: linkIds not in the Questionnaire: {', '.join(missing)}")
    return Instrument(folder.name, folder, questionnaire, rules, _flag_texts(folder, questionnaire, rules))


def _flag_texts(folder: Path, questionnaire: dict[str, Any], rules: ScoringRules | None) -> dict[str, Any]:
    """texts.json, checked as the Questionnaire's translations are: every language the form offers is offered to
    the clinician whole (a French Flag question beside an English label reads as a mistake)."""
    path = folder / "texts.json"
    catalogue: dict[str, Any] = {}
    if path.exists():
        try:
            catalogue = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise LoadError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(catalogue, dict):
            raise LoadError(f"{path}: must map languages to texts")
    wanted = [lang for lang in offered_languages(questionnaire) if lang != "en"]
    if rules is not None and wanted:
        try:
            scoring_texts.check_catalogue(rules, catalogue, wanted)
        except ValueError as exc:
            raise LoadError(f"{path}: {exc}") from None
    return catalogue


def _indicator(folder: Path) -> Indicator:
    try:
        return read_indicator(folder, _read_resource(folder / "measure.json"))
    except IndicatorError as exc:
        raise LoadError(str(exc)) from None


def _link_ids(items: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for item in items:
        found.add(item.get("linkId", ""))
        found |= _link_ids(item.get("item") or [])
    return found


def _check_concordance(library: Library) -> None:
    """A clinician-rated instrument's pairs name a client instrument of this library and numbers it scores."""
    for instrument in library.instruments:
        spec = instrument.rules.concordance if instrument.rules is not None else None
        if spec is None:
            continue
        where = instrument.folder / "scoring.json"
        client = library.rules_for(spec.client)
        if client is None:
            raise LoadError(f"{where}: concordance: no instrument with url {spec.client!r}")
        codes = {i.code for i in client.itemScores} | {s.code for s in client.scores}
        unknown = [p.client for p in (spec.total, *spec.domains) if p.client not in codes]
        if unknown:
            raise LoadError(f"{where}: concordance: {client.instrument} does not score {', '.join(unknown)}")


def discover(folders: list[Path], packs: list[Path] | None = None) -> Library:
    library = Library()
    for root in folders:
        if not root.exists():
            raise LoadError(f"{root}: library folder does not exist")
        if root.is_dir() and (root / "questionnaire.json").exists():  # one instrument folder
            library.instruments.append(_instrument(root))
            continue
        paths = [root] if root.is_file() else sorted(root.iterdir())
        for path in paths:
            if path.is_dir() and (path / "questionnaire.json").exists():
                library.instruments.append(_instrument(path))
            elif path.is_dir() and (path / "measure.json").exists():
                library.indicators.append(_indicator(path))
            elif path.is_file() and path.suffix == ".json":
                library.terminology.append((path, _read_resource(path)))
    urls = [i.url for i in library.instruments]
    duplicates = {u for u in urls if urls.count(u) > 1}
    if duplicates:
        raise LoadError(f"the same Questionnaire url is in two folders: {', '.join(sorted(duplicates))}")
    _check_concordance(library)
    try:
        check_codes(library.indicators, set(library.scored_codes()))
    except IndicatorError as exc:
        raise LoadError(str(exc)) from None
    for pack_folder in packs or []:
        pack: ContentPack = read_pack(pack_folder)
        for overlay_path, overlay in pack.overlays:
            instrument = library.instrument(overlay.get("questionnaire", ""))
            if instrument is None:
                raise LoadError(f"{overlay_path}: no instrument with url {overlay.get('questionnaire')!r}")
            try:
                licensed = apply_pack(instrument.questionnaire, overlay, pack)
                validate_resource(licensed)
                check_translations(licensed, str(overlay_path))
            except (ValueError, FhirError) as exc:
                message = exc.issues[0].diagnostics if isinstance(exc, FhirError) else str(exc)
                raise LoadError(f"{overlay_path}: {message}") from None
            library.licensed.append((overlay_path, licensed))
    return library
