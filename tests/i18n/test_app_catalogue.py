"""The app's message catalogue: app.pot is what the sources mark (so no string goes untranslated silently), every
shipped language translates all of it, and a catalogue that lags behind stops the server at start, naming the file
and the message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po

from fhir_server.app import create_app
from fhir_server.config import Settings
from fhir_server.i18n import CatalogueError, Catalogues, app_texts, for_server, shipped
from fhir_server.i18n.catalogues import SHIPPED
from fhir_server.smart import form_model

ROOT = Path(__file__).resolve().parents[2]


def _ids(path: Path) -> set[str]:
    with path.open("rb") as handle:
        return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(handle) if m.id}


def test_app_pot_is_current_with_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `make messages` extracts now is what app.pot holds: run it after marking a string, then translate."""
    monkeypatch.chdir(ROOT)
    extracted = tmp_path / "app.pot"
    CommandLineInterface().run(
        ["pybabel", "-q", "extract", "--mapping-file", "babel.cfg", "--output-file", str(extracted), "--no-location",
         "."]
    )  # fmt: skip
    now, committed = _ids(extracted), _ids(SHIPPED / "app.pot")
    assert now - committed == set(), "marked but not in app.pot: run make messages and translate"
    assert committed - now == set(), "in app.pot but no longer marked: run make messages"


def test_the_shipped_languages_translate_every_message() -> None:
    catalogues = shipped()
    assert catalogues.languages == ["en", "es", "fr"]
    template = _ids(SHIPPED / "app.pot")
    for language in ("fr", "es"):
        assert _ids(SHIPPED / language / "LC_MESSAGES" / "app.po") == template
    assert catalogues.translator("fr").gettext("Send my answers") == "Envoyer mes réponses"
    assert catalogues.translator("es").gettext("Send my answers") == "Enviar mis respuestas"
    assert catalogues.translator("de").gettext("Send my answers") == "Send my answers"  # English when none


def test_texts_of_other_modules_are_in_the_catalogue() -> None:
    """The form model's messages, the therapist's and the launch's refusals are looked up by their English."""
    template = _ids(SHIPPED / "app.pot")
    wanted = {*form_model.REQUIRED_MESSAGES.values(), form_model.DEFAULT_REQUIRED_MESSAGE, app_texts.UNUSABLE}
    wanted |= {app_texts.YES, app_texts.NO, *app_texts.REASONS, "This EHR is not registered", "Who is rating?"}
    assert wanted <= template
    boolean = form_model.FormItem("b", "boolean", "?", "b", definition={})
    assert [label for _, label in boolean.choices] == [app_texts.YES, app_texts.NO]
    with pytest.raises(ValueError) as reason:
        form_model.read_value(boolean, "maybe")
    assert str(reason.value) in app_texts.REASONS


def _pack_with_french(tmp_path: Path, drop: str) -> Path:
    """A content pack whose app catalogue (checked against the shipped template) lacks one message."""
    pack = tmp_path / "pack"
    (pack / "locales" / "fr" / "LC_MESSAGES").mkdir(parents=True)
    (pack / "pack.json").write_text('{"name": "lagging", "versionSuffix": "lagging", "licensee": "test"}')
    text = (SHIPPED / "fr" / "LC_MESSAGES" / "app.po").read_text(encoding="utf-8")
    start = text.index(f'msgid "{drop}"')
    end = text.index("\n\n", start)
    (pack / "locales" / "fr" / "LC_MESSAGES" / "app.po").write_text(text[:start] + text[end + 2 :], encoding="utf-8")
    return pack


def test_a_missing_translation_stops_the_start_naming_file_and_message(tmp_path: Path) -> None:
    pack = _pack_with_french(tmp_path, "Send my answers")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", content_packs=str(pack), _env_file=None)
    with pytest.raises(CatalogueError) as refused:
        create_app(settings)
    assert str(pack / "locales" / "fr" / "LC_MESSAGES" / "app.po") in str(refused.value)
    assert "'Send my answers'" in str(refused.value)


def test_fuzzy_extra_and_placeholder_mistakes_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "locales"
    shutil.copytree(SHIPPED, folder)
    po = folder / "es" / "LC_MESSAGES" / "app.po"
    original = po.read_text(encoding="utf-8")
    cases = {
        "placeholders": original.replace('msgstr "%(value)s de %(maximum)s"', 'msgstr "%(valor)s de %(maximum)s"'),
        "fuzzy": original.replace('msgid "Send my answers"', '#, fuzzy\nmsgid "Send my answers"'),
        "not in the template": original + '\nmsgid "A message nobody marked"\nmsgstr "Un mensaje"\n',
    }
    for expected, text in cases.items():
        assert text != original
        po.write_text(text, encoding="utf-8")
        with pytest.raises(CatalogueError, match=expected):
            Catalogues().load_folder(folder)


def test_a_pack_adds_a_language_checked_against_the_shipped_template(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    (pack / "locales" / "de" / "LC_MESSAGES").mkdir(parents=True)
    shutil.copy(SHIPPED / "fr" / "LC_MESSAGES" / "app.po", pack / "locales" / "de" / "LC_MESSAGES" / "app.po")
    assert for_server([pack]).languages == ["en", "de", "es", "fr"]
