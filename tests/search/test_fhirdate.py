"""FHIR R4 §3.1.1.4.2 date search: a value covers the range its precision implies."""

from __future__ import annotations

from datetime import datetime

import pytest

from fhir_server.search.fhirdate import DateFormatError, parse_range


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2026", datetime(2026, 1, 1), datetime(2026, 12, 31, 23, 59, 59, 999999)),
        ("2026-03", datetime(2026, 3, 1), datetime(2026, 3, 31, 23, 59, 59, 999999)),
        ("2024-02", datetime(2024, 2, 1), datetime(2024, 2, 29, 23, 59, 59, 999999)),
        ("2026-03-31", datetime(2026, 3, 31), datetime(2026, 3, 31, 23, 59, 59, 999999)),
        ("2026-03-31T23:59", datetime(2026, 3, 31, 23, 59), datetime(2026, 3, 31, 23, 59, 59, 999999)),
        ("2026-03-31T23:59:59Z", datetime(2026, 3, 31, 23, 59, 59), datetime(2026, 3, 31, 23, 59, 59, 999999)),
        ("2026-04-01T01:00:00+02:00", datetime(2026, 3, 31, 23, 0), datetime(2026, 3, 31, 23, 0, 0, 999999)),
        ("2026-03-31T10:00:00.5Z", datetime(2026, 3, 31, 10, 0, 0, 500000), datetime(2026, 3, 31, 10, 0, 0, 599999)),
    ],
)
def test_ranges(text, low, high):
    assert parse_range(text) == (low, high)


@pytest.mark.parametrize("text", ["2026-13", "2026-02-30", "26-01-01", "2026-01-01T25:00", "yesterday", ""])
def test_invalid_dates(text):
    with pytest.raises(DateFormatError):
        parse_range(text)
