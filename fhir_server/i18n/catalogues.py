"""The app's message catalogues: gettext ``.po`` files read with Babel at start-up and compiled in memory.

Layout of a catalogue folder (the shipped one is ``fhir_server/i18n/locales``; a content pack may add one):

    <folder>/<domain>.pot                     the English source of every message (``pybabel extract``)
    <folder>/<language>/LC_MESSAGES/<domain>.po

Domains: ``app`` (pages and buttons of the app, Flag follow-up questions shown to clinicians) and ``mail`` (the
messages that carry a form link).  English is the source language: its text is the msgid, so it needs no ``.po``.

Every ``.po`` is checked when it is loaded (``CatalogueError`` names the file and the message): a message of the
template without a translation, a translation marked fuzzy, a message the template no longer has, or placeholders
(``%(name)s``) that differ from the source's.  A server never starts with a half-translated page.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from gettext import NullTranslations
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

SHIPPED = Path(__file__).parent / "locales"
SOURCE_LANGUAGE = "en"
DOMAINS = ("app", "mail")
COUNT = "num"  # the count of a plural message (Jinja's ngettext and {% pluralize %} name it so)
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]|\{(\w+)\}")


class CatalogueError(Exception):
    """A catalogue that cannot be used: the message names the file and the key at fault."""


def _read(path: Path) -> Catalog:
    try:
        with path.open("rb") as handle:
            return read_po(handle, abort_invalid=True)
    except (OSError, ValueError) as exc:  # babel raises PoFileError (a ValueError) on a malformed file
        raise CatalogueError(f"{path}: cannot read the message catalogue ({exc})") from None


def _keys(catalog: Catalog) -> dict[str, str | tuple[str, ...]]:
    return {
        message.id if isinstance(message.id, str) else message.id[0]: message.id for message in catalog if message.id
    }


def _placeholders(text: str) -> set[str]:
    return {a or b for a, b in _PLACEHOLDER.findall(text)}


def check(template: Catalog, translation: Catalog, path: Path) -> None:
    """Every message of the template translated, none fuzzy, none extra, the same placeholders."""
    wanted = _keys(template)
    for key, message_id in wanted.items():
        message = translation.get(message_id)
        strings = (message.string if isinstance(message.string, tuple | list) else [message.string]) if message else []
        if not message or not all(strings):
            raise CatalogueError(f"{path}: no translation for the message {key!r}")
        if message.fuzzy:
            raise CatalogueError(f"{path}: the translation of {key!r} is marked fuzzy (check it, then unmark it)")
        # A plural's forms may spell the count out ("une question", Arabic's forms for one and two): a translated
        # form keeps every other placeholder the source forms share, and uses none they do not have.
        plural = isinstance(message_id, tuple | list)
        sources = [_placeholders(m) for m in (message_id if plural else [message_id])]
        needed, allowed = set.intersection(*sources) - ({COUNT} if plural else set()), set.union(*sources)
        for string in strings:
            if not needed <= _placeholders(string) <= allowed:
                raise CatalogueError(f"{path}: the translation of {key!r} has other placeholders than the source")
    extra = sorted(set(_keys(translation)) - set(wanted))
    if extra:
        raise CatalogueError(f"{path}: the message {extra[0]!r} is not in the template (run make messages)")


def _compiled(catalog: Catalog, domain: str) -> Translations:
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer, domain=domain)


@dataclass
class Catalogues:
    """Every language's translations by domain; ``languages`` are those with a catalogue of every domain the
    folders ship (plus English)."""

    translations: dict[tuple[str, str], Translations] = field(default_factory=dict)
    folders: list[Path] = field(default_factory=list)
    templates: dict[str, Catalog] = field(default_factory=dict)  # domain → the template its catalogues follow

    def load_folder(self, folder: Path) -> None:
        """Read and check every catalogue of one folder (the shipped one, or a content pack's).  A folder without
        a ``<domain>.pot`` (a content pack adding a language to the app) is checked against the template loaded
        before it, the shipped one: a pack's translation of the app must follow the app's own messages."""
        for domain in DOMAINS:
            template_path = folder / f"{domain}.pot"
            if template_path.exists():
                template = self.templates[domain] = _read(template_path)
            elif domain in self.templates and any(folder.glob(f"*/LC_MESSAGES/{domain}.po")):
                template = self.templates[domain]
            else:
                continue
            for po_path in sorted(folder.glob(f"*/LC_MESSAGES/{domain}.po")):
                language = po_path.parent.parent.name
                translation = _read(po_path)
                check(template, translation, po_path)
                self.translations[(language, domain)] = _compiled(translation, domain)
        self.folders.append(folder)

    @property
    def languages(self) -> list[str]:
        found = {language for language, _ in self.translations}
        return [SOURCE_LANGUAGE, *sorted(found - {SOURCE_LANGUAGE})]

    def translator(self, language: str | None, domain: str = "app") -> NullTranslations:
        """gettext/ngettext for a language and domain; English (the msgids) for anything not translated."""
        if domain not in DOMAINS:
            raise ValueError(f"unknown message domain {domain!r}")
        return self.translations.get((language or SOURCE_LANGUAGE, domain)) or NullTranslations()


def shipped() -> Catalogues:
    catalogues = Catalogues()
    catalogues.load_folder(SHIPPED)
    return catalogues


def for_server(pack_folders: list[Path]) -> Catalogues:
    """The shipped catalogues, then those of every content pack that has a ``locales`` folder (read once at start:
    ``CatalogueError`` stops the server, naming the file and the message)."""
    catalogues = shipped()
    for pack in pack_folders:
        if (pack / "locales").is_dir():
            catalogues.load_folder(pack / "locales")
    return catalogues
