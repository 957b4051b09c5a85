"""Background work yields to requests in proportion to the load (fhir_server/activity.py; the export runner)."""

from __future__ import annotations

import time

import pytest

from fhir_server.activity import RequestActivity, yield_seconds


def test_the_pause_follows_the_load_and_the_share():
    assert yield_seconds(0.02, 0.0, 0.25) == 0.0  # idle: full speed
    assert yield_seconds(0.02, 1.0, 0.25) == pytest.approx(0.06)  # busy: a quarter of the thread's time
    assert yield_seconds(0.02, 5.0, 0.25) == pytest.approx(0.06)  # a load above 1 counts as 1
    assert yield_seconds(0.02, 0.01, 0.25) == pytest.approx(0.0006)  # a status poll now and then: almost nothing
    assert yield_seconds(0.02, 1.0, 1.0) == 0.0  # a share of 1: never pauses
    assert yield_seconds(0.02, 1.0, 0.5) == pytest.approx(0.02)


def test_the_load_is_the_request_time_over_the_wall_time():
    activity = RequestActivity()
    since, before = time.monotonic() - 1.0, activity.request_seconds
    assert activity.load_since(before, since) == 0.0
    activity.ended(0.25)
    assert 0.2 < activity.load_since(before, since) <= 0.25  # a quarter of the last second (a little more wall)
    activity.ended(5.0)  # several requests at once add up
    assert activity.load_since(before, since) == 1.0
