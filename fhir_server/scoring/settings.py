"""Site overrides of the rules' settings (``FHIR_SERVER_SCORING_OVERRIDES``), checked against what the loaded
instruments declare before the server starts: an unknown setting, an unknown field or a value of the wrong type
stops it with a message naming the key, so no override is ever silently ignored."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_server.scoring.rules import AGE_BANDS, Comparator, ScoringRules, Setting

COMPARATORS = ("<", "<=", ">", ">=")


class SettingsError(ValueError):
    """An override that names nothing the rules declare, or a value the field cannot take."""


class ScoringSettings:
    """The rules' settings as this site runs them: each declared value, or the site's override of it.

    ``read`` records every ``<setting>.<field>`` the engine asked for (tests hold it to the declared keys)."""

    def __init__(self, overrides: dict[str, Any] | None = None, rules: Iterable[ScoringRules] = ()) -> None:
        self.declared: dict[str, Setting] = {}
        for rule_set in rules:
            self.declared.update(rule_set.settings)
        self.overrides = {key: _checked(key, value, self.declared) for key, value in (overrides or {}).items()}
        self.read: set[str] = set()

    def _value(self, rules: ScoringRules, name: str, field: str) -> Any:
        key = f"{name}.{field}"
        self.read.add(key)
        if field not in rules.settings[name].fields():  # the rules' loader makes this impossible for shipped data
            raise KeyError(f"{rules.instrument}: setting '{name}' declares no '{field}'")
        if key in self.overrides:
            return self.overrides[key]
        return getattr(rules.settings[name], field)

    def threshold(self, rules: ScoringRules, name: str, age_band: str) -> Decimal:
        value = self._value(rules, name, "threshold")
        if isinstance(value, dict):
            value = value.get(age_band, value.get("adult", next(iter(value.values()))))
        return Decimal(str(value))

    def comparator(self, rules: ScoringRules, name: str) -> Comparator:
        return self._value(rules, name, "comparator")

    def window(self, rules: ScoringRules, name: str) -> int:
        return int(self._value(rules, name, "window"))

    def uses_age_bands(self, rules: ScoringRules) -> bool:
        """Whether a threshold of these rules (as declared or overridden) depends on the age band."""
        for name, setting in rules.settings.items():
            value = self.overrides.get(f"{name}.threshold", setting.threshold)
            if isinstance(value, dict):
                return True
        return False


def _checked(key: Any, value: Any, declared: dict[str, Setting]) -> Any:
    if not isinstance(key, str) or "." not in key:
        raise SettingsError(f"scoring override {key!r}: expected '<setting>.<field>', e.g. 'srs-cutoff.threshold'")
    name, _, field = key.rpartition(".")
    setting = declared.get(name)
    if setting is None:
        known = ", ".join(sorted(declared)) or "none"
        raise SettingsError(f"scoring override '{key}': no instrument declares a setting '{name}' (settings: {known})")
    if field not in setting.fields():
        fields = ", ".join(sorted(setting.fields()))
        raise SettingsError(f"scoring override '{key}': setting '{name}' has no '{field}' (it has: {fields})")
    if field == "comparator":
        if value not in COMPARATORS:
            raise SettingsError(f"scoring override '{key}': {value!r} is not one of {', '.join(COMPARATORS)}")
        return value
    if field == "window":
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 20:
            raise SettingsError(f"scoring override '{key}': {value!r} is not a whole number of sessions from 2 to 20")
        return value
    if isinstance(value, dict):
        unknown = [band for band in value if band not in AGE_BANDS]
        if unknown or not value:
            raise SettingsError(f"scoring override '{key}': age bands must be {', '.join(AGE_BANDS)}, got {unknown}")
        return {band: _number(key, v) for band, v in value.items()}
    return _number(key, value)


def _number(key: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SettingsError(f"scoring override '{key}': {value!r} is not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise SettingsError(f"scoring override '{key}': {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise SettingsError(f"scoring override '{key}': {value!r} must be a number of zero or more")
    return number
