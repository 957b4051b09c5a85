"""The rating form as data, read from the Questionnaire itself: which control each item gets (SDC itemControl),
its anchors, help text and options; answers read back from the browser; the response items they become.

No measure is named here.  A visual-analog line is any ``integer`` item with item control ``slider`` (its child
``display`` items with control ``lower`` / ``upper`` are the anchors, ``flyover`` the description); a choice is a
radio group of its ``answerOption``s; ``enableWhen`` is honoured in the browser (hide) and here (drop the answer).
Whatever text the Questionnaire carries is shown, so a content pack's licensed wording appears as loaded.

A form speaks one language: ``build_form(questionnaire, language)`` takes every text from the Questionnaire's
``translation`` extensions (library/translations.py) when it offers that language, else its own.  Answers are
language-independent: a choice submits the same token and records the same coding whatever its label says.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_server.fhirjson import FhirDecimal
from fhir_server.library import translations
from fhir_server.validation.enable_when import is_enabled
from fhir_server.validation.sdc import CALCULATED

EXT = "http://hl7.org/fhir/StructureDefinition/"
ITEM_CONTROL = EXT + "questionnaire-itemControl"
HIDDEN = EXT + "questionnaire-hidden"
MIN_VALUE, MAX_VALUE, SLIDER_STEP = EXT + "minValue", EXT + "maxValue", EXT + "questionnaire-sliderStepValue"
DECIMAL = re.compile(r"-?(0|[1-9]\d{0,14})(\.\d{1,8})?")
MAX_STRING = 500  # a relationship or a short comment; longer input is a mistake or an attack, not an answer

ANSWERED_KINDS = ("slider", "choice", "string", "text", "integer", "decimal", "boolean")
# The page's own words, not the Questionnaire's: these English strings are msgids of the app's gettext catalogue
# (fhir_server/i18n), which the app layer translates; they stay English here so the keys never drift.
REQUIRED_MESSAGES = {
    "slider": "Please place a mark on this line.",
    "choice": "Please choose one answer.",
    "boolean": "Please choose one answer.",
}
DEFAULT_REQUIRED_MESSAGE = "Please fill this in."


class UnsupportedQuestionnaire(Exception):
    """The Questionnaire uses an item the form cannot show (the page says so instead of a half form)."""


@dataclass
class Option:
    token: str  # what the HTML control submits
    label: str
    answer: dict[str, Any]  # the response answer, e.g. {"valueCoding": {...}}


@dataclass
class FormItem:
    link_id: str
    kind: str  # display | group | one of ANSWERED_KINDS
    text: str
    dom_id: str
    definition: dict[str, Any] = field(repr=False)
    required: bool = False
    prefix: str = ""
    help: list[str] = field(default_factory=list)
    lower: str = ""
    upper: str = ""
    minimum: int = 0
    maximum: int = 100
    step: int = 1
    options: list[Option] = field(default_factory=list)
    children: list[FormItem] = field(default_factory=list)

    @property
    def field_name(self) -> str:
        return f"answer.{self.link_id}"

    @property
    def required_message(self) -> str:
        return REQUIRED_MESSAGES.get(self.kind, DEFAULT_REQUIRED_MESSAGE)

    @property
    def choices(self) -> list[tuple[str, str]]:
        """(token, label) of a radio group."""
        if self.kind == "boolean":
            return [("true", "Yes"), ("false", "No")]
        return [(o.token, o.label) for o in self.options]

    def token_of(self, value: Any) -> str:
        """A stored answer as the token its control submits."""
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    @property
    def enable_when(self) -> dict[str, Any] | None:
        """For the browser: the conditions as the Questionnaire states them (the script evaluates =, != and
        exists on the answers on the page)."""
        conditions = self.definition.get("enableWhen")
        if not conditions:
            return None
        return {"behavior": self.definition.get("enableBehavior", "all"), "conditions": conditions}


@dataclass
class Form:
    questionnaire: dict[str, Any]
    items: list[FormItem]
    language: str = "en"  # the language the texts are in (one the Questionnaire offers)
    languages: list[str] = field(default_factory=lambda: ["en"])  # every language the Questionnaire offers

    @property
    def title(self) -> str:
        if self.questionnaire.get("title"):
            source = translations.source_language(self.questionnaire)
            return translations.text(self.questionnaire, "title", self.language, source)
        return str(self.questionnaire.get("name") or "Questionnaire")

    @property
    def direction(self) -> str:
        """``rtl`` for a language written right to left (the page's ``dir``), else ``ltr``."""
        return "rtl" if translations.is_right_to_left(self.language) else "ltr"

    @property
    def canonical(self) -> str:
        return f"{self.questionnaire['url']}|{self.questionnaire['version']}"

    def walk(self) -> Iterator[FormItem]:
        stack = list(reversed(self.items))
        while stack:
            item = stack.pop()
            yield item
            stack.extend(reversed(item.children))

    def by_link_id(self) -> dict[str, FormItem]:
        return {item.link_id: item for item in self.walk() if item.kind in ANSWERED_KINDS}


def _control(item: dict[str, Any]) -> str | None:
    for ext in item.get("extension") or []:
        if ext.get("url") == ITEM_CONTROL:
            codings = (ext.get("valueCodeableConcept") or {}).get("coding") or []
            return next((c.get("code") for c in codings if c.get("code")), None)
    return None


def _extension(item: dict[str, Any], url: str) -> Any:
    for ext in item.get("extension") or []:
        if ext.get("url") == url:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


def _options(item: dict[str, Any], say: Callable[[dict[str, Any], str], str]) -> list[Option]:
    options = []
    for index, option in enumerate(item.get("answerOption") or []):
        key = next((k for k in option if k.startswith("value")), None)
        if key is None:
            continue
        value = option[key]
        if key == "valueCoding":
            label = say(value, "display") or str(value.get("code") or "")
            token = str(value.get("code") or index)
        else:  # a string option shows its (translated) value and records the value itself
            label, token = (say(option, key) if key == "valueString" else str(value)), str(value)
        options.append(Option(token, label, {key: value}))
    if len({o.token for o in options}) != len(options):  # duplicate codes across systems: fall back to positions
        for index, option in enumerate(options):
            option.token = str(index)
    return options


def build_form(questionnaire: dict[str, Any], language: str | None = None) -> Form:
    """The form in ``language`` (a BCP 47 tag) when the Questionnaire offers it (fr-CA takes fr), else in the
    Questionnaire's own language."""
    counter = iter(range(1_000_000))
    source = translations.source_language(questionnaire)
    shown = translations.match(questionnaire, language)

    def say(owner: dict[str, Any], key: str) -> str:
        return translations.text(owner, key, shown, source)

    def item_of(definition: dict[str, Any]) -> FormItem | None:
        if definition.get("readOnly") or _extension(definition, HIDDEN) is True or _extension(definition, CALCULATED):
            # calculated scores: the server adds them to the response (calculated.py), the client never sees them
            return None
        item_type = definition.get("type")
        link_id = str(definition.get("linkId"))
        slug = re.sub(r"[^A-Za-z0-9_-]", "_", link_id)[:40]
        item = FormItem(
            link_id=link_id,
            kind="display",
            text=say(definition, "text"),
            dom_id=f"q{next(counter)}-{slug}",
            definition=definition,
            required=bool(definition.get("required")),
            prefix=say(definition, "prefix"),
        )
        control = _control(definition)
        if item_type in ("display", "group"):
            item.kind = item_type
        elif item_type == "integer" and control == "slider":
            item.kind = "slider"
            item.minimum = int(_extension(definition, MIN_VALUE) or 0)
            item.maximum = int(_extension(definition, MAX_VALUE) or 100)
            item.step = max(1, int(_extension(definition, SLIDER_STEP) or 1))
        elif item_type == "choice" and definition.get("answerOption"):
            item.kind, item.options = "choice", _options(definition, say)
        elif item_type in ("string", "text", "integer", "decimal", "boolean"):
            item.kind = item_type
        else:
            raise UnsupportedQuestionnaire(f"item '{link_id}' of type '{item_type}' cannot be shown in the form")
        for child in definition.get("item") or []:
            child_control = _control(child) if child.get("type") == "display" else None
            if child_control in ("lower", "upper"):
                setattr(item, child_control, say(child, "text"))
            elif child.get("type") == "display" and item.kind != "group":
                item.help.append(say(child, "text"))  # flyover or plain: a description under the label
            elif (nested := item_of(child)) is not None:
                item.children.append(nested)
        return item

    items = [i for d in questionnaire.get("item") or [] if (i := item_of(d)) is not None]
    return Form(questionnaire, items, shown, translations.languages(questionnaire))


def read_value(item: FormItem, raw: Any) -> Any:
    """One answer as the browser sent it (form field or draft JSON) → a typed value; None when empty.
    ValueError for what this item cannot take."""
    if raw is None or raw == "":
        return None
    text = str(raw).strip()
    if item.kind in ("slider", "integer"):
        if isinstance(raw, bool) or not re.fullmatch(r"-?\d{1,9}", text):
            raise ValueError("not a whole number")
        value = int(text)
        low, high = _bounds(item)
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError("outside the allowed range")
        return value
    if item.kind == "decimal":
        if not DECIMAL.fullmatch(text):
            raise ValueError("not a number")
        return FhirDecimal(text)  # stored as written: FHIR decimals keep their precision ("7.50")
    if item.kind == "boolean":
        if text not in ("true", "false"):
            raise ValueError("not yes or no")
        return text == "true"
    if item.kind == "choice":
        if text not in {o.token for o in item.options}:
            raise ValueError("not one of the answers")
        return text
    if len(text) > MAX_STRING:
        raise ValueError("too long")
    return text or None


def _bounds(item: FormItem) -> tuple[int | None, int | None]:
    if item.kind == "slider":
        return item.minimum, item.maximum
    low, high = _extension(item.definition, MIN_VALUE), _extension(item.definition, MAX_VALUE)
    return (int(low) if isinstance(low, int) else None), (int(high) if isinstance(high, int) else None)


def read_answers(form: Form, fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Answers keyed by linkId from ``answer.<linkId>`` fields, and a message per item that could not be read."""
    answers: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for link_id, item in form.by_link_id().items():
        try:
            value = read_value(item, fields.get(item.field_name))
        except ValueError as exc:
            errors[link_id] = f"This answer could not be used ({exc})."
            continue
        if value is not None:
            answers[link_id] = value
    return answers, errors


def read_draft(form: Form, draft: Mapping[str, Any]) -> dict[str, Any]:
    """A draft as the browser posts it ({linkId: value}); ValueError naming the first item it cannot take."""
    items = form.by_link_id()
    answers: dict[str, Any] = {}
    for link_id, raw in draft.items():
        if link_id not in items:
            raise ValueError(f"'{str(link_id)[:64]}' is not a question of this form")
        try:
            value = read_value(items[link_id], raw)
        except ValueError as exc:
            raise ValueError(f"'{link_id}': {exc}") from None
        if value is not None:
            answers[link_id] = str(raw).strip() if isinstance(value, FhirDecimal) else value
    return answers


def _answer(item: FormItem, value: Any) -> dict[str, Any]:
    if item.kind == "choice":
        return dict(next(o.answer for o in item.options if o.token == value))
    key = {
        "slider": "valueInteger",
        "integer": "valueInteger",
        "decimal": "valueDecimal",
        "boolean": "valueBoolean",
    }.get(item.kind, "valueString")
    return {key: value}


def response_items(form: Form, answers: Mapping[str, Any]) -> list[dict[str, Any]]:
    """QuestionnaireResponse.item in the Questionnaire's order and nesting, answered items only."""

    def node(item: FormItem) -> dict[str, Any] | None:
        nested = [n for child in item.children if (n := node(child)) is not None]
        if item.kind == "group":
            return {"linkId": item.link_id, "item": nested} if nested else None
        if item.kind == "display" or item.link_id not in answers:
            return None
        answer = _answer(item, answers[item.link_id])
        if nested:  # questions under a question hang off its answer (R4 QuestionnaireResponse.item.answer.item)
            answer["item"] = nested
        return {"linkId": item.link_id, "answer": [answer]}

    return [n for item in form.items if (n := node(item)) is not None]


def enabled_answers(form: Form, answers: Mapping[str, Any]) -> dict[str, Any]:
    """Drop answers to items that enableWhen disables (the validator rejects them, and the client may have
    answered before changing an earlier answer); repeated because one dropped answer can disable another."""
    kept = dict(answers)
    conditional = [i for i in form.walk() if i.definition.get("enableWhen")]
    while True:
        response = {"item": response_items(form, kept)}
        disabled = [i.link_id for i in conditional if not is_enabled(i.definition, response, form.questionnaire)]
        dropped = [link_id for link_id in disabled if link_id in kept]
        if not dropped:
            return kept
        for link_id in dropped:
            del kept[link_id]


def missing_required(form: Form, answers: Mapping[str, Any]) -> dict[str, str]:
    """Required, enabled, unanswered items → the message the page shows beside each."""
    response = {"item": response_items(form, answers)}
    missing: dict[str, str] = {}
    for item in form.walk():
        if item.kind not in ANSWERED_KINDS or not item.required or item.link_id in answers:
            continue
        if is_enabled(item.definition, response, form.questionnaire):
            missing[item.link_id] = item.required_message
    return missing
