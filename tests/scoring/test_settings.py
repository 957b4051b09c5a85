"""Each rule owns its settings: every key declared in the rules data is read by the engine and every key the
engine reads is declared; a site override that names nothing declared, or has the wrong type, stops the server
with a message naming it; the README's table is the rules data's."""

from __future__ import annotations

import json
from decimal import Decimal
from itertools import product
from pathlib import Path

import pytest

from fhir_server.scoring.ages import age_notes
from fhir_server.scoring.concordance import margins
from fhir_server.scoring.flags import TherapySession, cutoff_of, evaluate_flags, interpretations, window_depth
from fhir_server.scoring.rules import RulesError, load_rules
from fhir_server.scoring.settings import ScoringSettings, SettingsError
from fhir_server.scoring.settings_table import markdown, readme_block, shipped_rules
from tests.store.secrets_support import fhir_server

RULES = [r for r in shipped_rules() if r.scores]


def declared_keys() -> set[str]:
    return {f"{name}.{field}" for r in RULES for name, s in r.settings.items() for field in s.fields()}


def _exercise(settings: ScoringSettings) -> None:
    """Everything scoring computes, for every instrument, over histories and ages that reach every rule."""
    for rules in RULES:
        for low, band, depth in product((False, True), ("child", "adolescent", "adult"), range(5)):
            value = {s.id: (s.min if low else s.max) for s in rules.scores}
            items = {i.linkId: Decimal(0 if low else 10) for i in rules.itemScores}
            history = [TherapySession("2026-01-01", {s.id: s.max - n for s in rules.scores}) for n in range(depth)]
            evaluate_flags(rules, value, items, history, band, settings)
            for score in rules.scores:
                interpretations(rules, score.id, value[score.id], history, band, settings)
                cutoff_of(rules, score.id, band, settings)
        window_depth(rules, settings)
        age_notes(rules, settings, None, "2026-01-01")
        if rules.concordance is not None:
            margins(rules, settings)


def test_every_declared_key_is_read_and_every_key_read_is_declared():
    settings = ScoringSettings({}, RULES)
    _exercise(settings)
    assert settings.read == declared_keys()


def test_overridden_keys_are_the_ones_read():
    overrides = {
        key: (3 if key.endswith(".window") else "<=" if key.endswith(".comparator") else 7) for key in declared_keys()
    }
    settings = ScoringSettings(overrides, RULES)
    _exercise(settings)
    assert settings.read == set(overrides)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("srs-decline.thresold", 2, "setting 'srs-decline' has no 'thresold' (it has: threshold, window)"),
        ("srs-drop.comparator", "<", "setting 'srs-drop' has no 'comparator' (it has: threshold)"),
        ("ors-reliable-change-cutoff.threshold", 26, "no instrument declares a setting 'ors-reliable-change-cutoff'"),
        ("srs-cutoff", 35, "expected '<setting>.<field>'"),
        ("srs-cutoff.comparator", "=<", "'=<' is not one of <, <=, >, >="),
        ("srs-cutoff.threshold", "thirty-six", "'thirty-six' is not a number"),
        ("srs-cutoff.threshold", -1, "must be a number of zero or more"),
        ("srs-decline.window", 1, "not a whole number of sessions from 2 to 20"),
        ("srs-decline.window", "3", "not a whole number of sessions from 2 to 20"),
        ("ors-cutoff.threshold", {"adults": 25}, "age bands must be child, adolescent, adult"),
    ],
)
def test_a_wrong_override_is_refused_naming_it(key, value, message):
    with pytest.raises(SettingsError) as refused:
        ScoringSettings({key: value}, RULES)
    assert message in str(refused.value) and str(refused.value).startswith(f"scoring override {key!r}")


def test_age_banded_overrides_are_read_per_band():
    settings = ScoringSettings({"ors-cutoff.threshold": {"adult": 24, "adolescent": 27}}, RULES)
    ors = next(r for r in RULES if r.instrument == "ors")
    assert settings.threshold(ors, "ors-cutoff", "adolescent") == 27
    assert settings.threshold(ors, "ors-cutoff", "adult") == 24


def test_serve_stops_on_a_wrong_override_in_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    refused = fhir_server(
        "serve", "--port", "0", url=url, FHIR_SERVER_SCORING_OVERRIDES=json.dumps({"srs-decline.thresold": 2})
    )
    assert refused.returncode == 1, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fhir-server: not starting: scoring override 'srs-decline.thresold'")


def _write(tmp_path: Path, change) -> Path:
    data = json.loads((Path(__file__).parents[2] / "questionnaires/srs/scoring.json").read_text())
    change(data)
    path = tmp_path / "scoring.json"
    path.write_text(json.dumps(data))
    return path


def test_rules_data_that_declares_an_unread_field_or_reads_an_undeclared_one_does_not_load(tmp_path):
    def unread(data):
        data["settings"]["srs-drop"]["window"] = 3

    def undeclared(data):
        del data["settings"]["srs-decline"]["window"]

    def unknown(data):
        data["flags"][0]["setting"] = "srs-cut-off"

    for change, message in (
        (unread, "setting 'srs-drop' declares window, which no rule reads"),
        (undeclared, "setting 'srs-decline' lacks window, which flag 'sustained-decline' reads"),
        (unknown, "flag 'below-cutoff' names setting 'srs-cut-off', which 'settings' does not declare"),
    ):
        with pytest.raises(RulesError, match=message):
            load_rules(_write(tmp_path, change))


def test_the_readme_settings_table_is_the_rules_data():
    assert readme_block() == markdown(shipped_rules()), "run: python -m fhir_server.scoring.settings_table --write"
