"""Issue 22, the instruments' own texts in English, French and Spanish: FHIR ``translation`` extensions on every
displayed text, checked when the library loads (a missing or malformed one names the file and the element);
content packs add languages (the Arabic sample); the Flag texts' translations for the clinician view."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fhir_server.config import PROJECT_ROOT
from fhir_server.library import LoadError, discover
from fhir_server.library import translations as tr

QUESTIONNAIRES = PROJECT_ROOT / "questionnaires"
ARABIC = PROJECT_ROOT / "examples" / "packs" / "arabic-sample"
SRS = "http://fit-fhir.org/fhir/Questionnaire/srs"
ORS = "http://fit-fhir.org/fhir/Questionnaire/ors"


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "questionnaires"
    shutil.copytree(QUESTIONNAIRES, copy)
    return copy


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False))


def _item(questionnaire: dict, link_id: str) -> dict:
    def walk(items):
        for item in items:
            if item["linkId"] == link_id:
                return item
            if (found := walk(item.get("item") or [])) is not None:
                return found
        return None

    return walk(questionnaire["item"])


def _drop(element: dict, lang: str) -> None:
    element["extension"] = [
        e for e in element["extension"] if not any(p.get("valueCode") == lang for p in e["extension"])
    ]


def test_every_shipped_questionnaire_offers_english_french_and_spanish():
    library = discover([QUESTIONNAIRES])
    assert len(library.instruments) == 8
    for instrument in library.instruments:
        assert instrument.questionnaire["language"] == "en", instrument.id
        assert tr.languages(instrument.questionnaire) == ["en", "fr", "es"], instrument.id
        for lang in ("fr", "es"):  # every displayed text, each different from nothing and said once per language
            for shown in tr.displayed_texts(instrument.questionnaire):
                assert tr.translations(shown.owner, shown.key)[lang].strip(), (instrument.id, shown.label)


def test_a_missing_french_text_fails_the_load_naming_file_and_element(tmp_path):
    copy = _copy(tmp_path)
    _edit(copy / "srs" / "questionnaire.json", lambda q: _drop(_item(q, "relationship")["_text"], "fr"))
    with pytest.raises(LoadError) as failed:
        discover([copy])
    assert (
        str(failed.value) == f"{copy / 'srs' / 'questionnaire.json'}: no 'fr' translation of item 'relationship' text"
    )


def test_a_missing_option_label_or_description_is_named(tmp_path):
    copy = _copy(tmp_path)
    option = lambda q: _drop(_item(q, "wai-sr-3")["answerOption"][1]["valueCoding"]["_display"], "es")  # noqa: E731
    _edit(copy / "wai-sr" / "questionnaire.json", option)
    with pytest.raises(
        LoadError, match=r"wai-sr/questionnaire\.json: no 'es' translation of item 'wai-sr-3' option '2'"
    ):
        discover([copy])
    copy = _copy(tmp_path / "again")
    _edit(copy / "ors" / "questionnaire.json", lambda q: _drop(q["_description"], "fr"))
    with pytest.raises(LoadError, match=r"ors/questionnaire\.json: no 'fr' translation of description$"):
        discover([copy])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda parts: parts.pop(0), "item 'goals' text: a translation of text without its 'lang'"),
        (lambda parts: parts.pop(1), "item 'goals' text: the 'fr' translation of text has no 'content'"),
    ],
)
def test_a_malformed_translation_is_a_clear_load_error(tmp_path, change, message):
    copy = _copy(tmp_path)
    _edit(
        copy / "srs" / "questionnaire.json", lambda q: change(_item(q, "goals")["_text"]["extension"][0]["extension"])
    )
    with pytest.raises(LoadError, match=message.replace("(", r"\(")):
        discover([copy])


def test_two_translations_into_one_language_are_refused(tmp_path):
    copy = _copy(tmp_path)

    def twice(q):
        extensions = _item(q, "goals-help")["_text"]["extension"]
        extensions.append(json.loads(json.dumps(extensions[0])))

    _edit(copy / "srs" / "questionnaire.json", twice)
    with pytest.raises(LoadError, match=r"srs/questionnaire\.json: item 'goals-help' text: two 'fr' translations"):
        discover([copy])


def test_text_falls_back_to_the_source_and_languages_match_by_primary_subtag():
    srs = discover([QUESTIONNAIRES]).instrument(SRS).questionnaire
    item = _item(srs, "goals")
    assert tr.text(item, "text", "es") == "Metas y temas" and tr.text(item, "text", "en") == "Goals and Topics"
    assert tr.text(item, "text", "de") == "Goals and Topics"  # not offered: the source text
    assert tr.text(item, "prefix", "fr") == ""  # no such element
    assert [tr.match(srs, w) for w in ("fr-CA", "ES", "de", None)] == ["fr", "es", "en", "en"]


def test_the_arabic_sample_pack_loads_and_offers_arabic():
    library = discover([QUESTIONNAIRES], packs=[ARABIC])
    by_url = {q["url"]: q for _, q in library.licensed}
    assert set(by_url) == {SRS, ORS}
    for questionnaire in by_url.values():
        assert questionnaire["version"] == "1.0.2-ar-sample"
        assert tr.languages(questionnaire) == ["en", "fr", "es", "ar"]
        assert "not a validated translation" in questionnaire["copyright"]
    respondent = _item(by_url[ORS], "respondent")
    assert tr.text(respondent["answerOption"][1]["valueCoding"], "display", "ar") == "شخص آخر"
    assert tr.is_right_to_left("ar") and not tr.is_right_to_left("fr")


def test_a_packs_language_must_be_complete(tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(ARABIC, pack)
    _edit(pack / "srs.json", lambda o: o["translations"]["ar"]["items"].pop("approach-help"))
    with pytest.raises(LoadError, match=r"srs\.json: no 'ar' translation of item 'approach-help' text"):
        discover([QUESTIONNAIRES], packs=[pack])
    _edit(pack / "srs.json", lambda o: o["translations"]["ar"]["items"].update({"nothing": "x"}))
    with pytest.raises(LoadError, match=r"srs\.json: translations 'ar': linkIds not in the Questionnaire: nothing"):
        discover([QUESTIONNAIRES], packs=[pack])


def test_licensed_english_withdraws_the_shipped_translations_it_replaces():
    """The shipped French renders the project's wording, not the licensed one: a pack that replaces the English
    and brings no French serves its version in English only."""
    [(_, licensed)] = discover(
        [QUESTIONNAIRES], packs=[PROJECT_ROOT / "tests" / "data" / "content-pack-example"]
    ).licensed
    assert tr.languages(licensed) == ["en"]
    assert "_text" not in _item(licensed, "relationship") and "_title" not in licensed


def test_flag_texts_need_every_offered_language(tmp_path):
    copy = _copy(tmp_path)
    _edit(copy / "srs" / "texts.json", lambda t: t["es"]["flags"].pop("drop"))
    with pytest.raises(LoadError, match=r"srs/texts\.json: no 'es' translation of flag 'drop' message"):
        discover([copy])
    copy = _copy(tmp_path / "again")
    _edit(copy / "ors" / "texts.json", lambda t: t["fr"]["flags"].update({"deterioration": "ORS {value} baisse"}))
    with pytest.raises(LoadError, match=r"ors/texts\.json: the 'fr' flag 'deterioration' message must use"):
        discover([copy])


def test_a_stored_flag_text_reads_in_the_clinicians_language():
    library = discover([QUESTIONNAIRES])
    english = (
        'Rated by another person, not the client: SRS 35.9 today, below 36. Ask with curiosity: "I noticed '
        "today's rating was a little lower. Can you help me understand what did not feel quite right?\""
    )
    french = library.flag_text("srs-below-cutoff", english, "fr-CA")
    assert french.startswith(
        "Évalué par une autre personne, et non par le client\u00a0: SRS 35,9 aujourd'hui, sous 36."
    )
    assert "Pouvez-vous m'aider à comprendre" in french
    checkin = (
        'Lower today: Relationship 8.5 and Goals and Topics 8. Check in: "Was there anything about feeling heard, '
        "understood and respected or working on what you wanted to work on that could have been a little better "
        'for you today?"'
    )
    spanish = library.flag_text("srs-item-checkin", checkin, "es")
    assert spanish.startswith("Más bajo hoy: Relación 8,5 y Metas y temas 8.")
    assert "sentirse escuchado/a, comprendido/a y respetado/a o trabajar en lo que usted quería trabajar" in spanish
    assert library.flag_text("srs-below-cutoff", english, "en") == english
    assert (
        library.flag_text("srs-below-cutoff", "A text written before this release", "fr")
        == "A text written before this release"
    )
