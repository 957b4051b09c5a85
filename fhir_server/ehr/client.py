"""HTTP to an EHR, with the rules every request to it follows: a timeout, the EHR's rate cap, its ``Retry-After``,
and failures turned into ``DeliveryError`` (retryable or not) whose text is safe to store and log: status codes,
OperationOutcome / OAuth error codes and transport error kinds, never response bodies (they may echo PHI) or
tokens.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from fhir_server import __version__
from fhir_server.outbound import Answer, Outbound, OutboundError

# 4xx answers worth retrying: the request may succeed later as it is (a timeout, a conflict with a concurrent
# writer, throttling).  Every other 4xx means the EHR will not take this payload until someone changes something.
RETRYABLE_CLIENT_ERRORS = {401, 408, 409, 423, 425, 429}
MAX_RETRY_AFTER = 24 * 3600.0  # an EHR asking for more than a day is treated as asking for a day


class DeliveryError(Exception):
    def __init__(
        self, reason: str, *, retryable: bool, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the EHR asked us to wait, if it said
        self.status = status


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After: 120`` or ``Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`` → seconds from now (≥ 0)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class RateLimits:
    """Per EHR, in this process: at most ``max_requests_per_second`` requests, and none while the EHR has asked us
    to wait (Retry-After).  Waiting is interruptible by the worker's stop event."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        self._next_slot: dict[int, float] = {}
        self._blocked_until: dict[int, float] = {}

    def blocked_for(self, ehr_id: int) -> float:
        return max(0.0, self._blocked_until.get(ehr_id, 0.0) - time.monotonic())

    def block(self, ehr_id: int, seconds: float) -> None:
        with self._lock:
            until = time.monotonic() + seconds
            self._blocked_until[ehr_id] = max(until, self._blocked_until.get(ehr_id, 0.0))

    def wait_turn(self, ehr_id: int, per_second: float | None) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._blocked_until.get(ehr_id, 0.0), self._next_slot.get(ehr_id, 0.0))
            if per_second:
                self._next_slot[ehr_id] = start + 1.0 / per_second
        delay = start - time.monotonic()
        if delay > 0 and self._stop.wait(delay):
            raise DeliveryError("the server is shutting down", retryable=True)


class EhrHttp:
    """Calls to EHRs (outbound.py's rules: one pool, no redirects, a size limit), each naming the EHR whose rate cap
    and Retry-After apply, failures as ``DeliveryError``."""

    def __init__(self, timeout: float, limits: RateLimits) -> None:
        self.timeout = timeout
        self.limits = limits
        self.outbound = Outbound(f"fhir-server/{__version__} (write-back)")

    def close(self) -> None:
        self.outbound.close()

    def request(
        self,
        ehr_id: int,
        per_second: float | None,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        form: dict[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
    ) -> Answer:
        self.limits.wait_turn(ehr_id, per_second)
        try:
            response = self.outbound.request(
                method, url, headers=headers, content=content, form=form, basic_auth=basic_auth, timeout=self.timeout
            )
        except OutboundError as exc:
            reason = {
                "timeout": f"no answer from the EHR within {self.timeout:g} s",
                "connect": "could not connect to the EHR",
            }.get(exc.kind, f"the connection to the EHR failed: {exc}")
            raise DeliveryError(reason, retryable=True) from None
        if response.status_code in (429, 503):
            wait = parse_retry_after(response.headers.get("retry-after"))
            if wait:
                self.limits.block(ehr_id, wait)
        return response


def failure(response: Answer, what: str) -> DeliveryError:
    """A non-success answer as an error: retryable or not, with the wait the EHR asked for."""
    status = response.status_code
    code = _error_code(response)
    reason = f"{what}: HTTP {status}" + (f" ({code})" if code else "")
    retry_after = parse_retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
    retryable = status >= 500 or status in RETRYABLE_CLIENT_ERRORS
    return DeliveryError(reason, retryable=retryable, retry_after=retry_after, status=status)


def _error_code(response: Answer) -> str | None:
    """The machine-readable error code only (OperationOutcome issue code or OAuth ``error``), never free text."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if body.get("resourceType") == "OperationOutcome":
        issues = body.get("issue") or [{}]
        code = issues[0].get("code") if isinstance(issues[0], dict) else None
    else:
        code = body.get("error")
    return code[:40] if isinstance(code, str) and code.replace("-", "").replace("_", "").isalnum() else None
