"""Waiting for something to happen in another process (a message arriving, a row changing): poll until it is
true, and fail naming what never happened.  It measures arrival, never a duration: the deadline is generous."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: Callable[[], Any], description: str, timeout: float = 60) -> Any:
    """Poll until ``what()`` is truthy and return it."""
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout} s: {description}")
        time.sleep(0.05)
