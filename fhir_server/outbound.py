"""Every request this server makes to another server goes through here: EHRs' FHIR APIs and token endpoints
(write-back, the SMART app, CDS Hooks reads), JWK Sets of clients and issuers, external identity providers.

The rules live in one place:
- one connection pool for the process, made on first use (most processes never call out);
- a timeout on every call;
- no redirects: a 3xx could point anywhere, and a bearer token or client secret would follow it;
- answers read up to a size limit, so a peer cannot fill memory;
- failures are ``OutboundError`` whose text says only what kind of failure it was — never the URL (its query may
  name a patient), a body (it may echo PHI) or a token — so callers can log it as it is;
- a User-Agent naming this server.

The EHR's rate cap and ``Retry-After`` are the write-back's own rules, on top of this (ehr/client.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from fhir_server import __version__

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


class OutboundError(Exception):
    """``kind``: timeout, connect, transport or too-large.  The message is safe to log and show."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: httpx.Headers  # case-insensitive
    content: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        try:
            return orjson.loads(self.content)
        except orjson.JSONDecodeError as exc:
            raise ValueError("the answer is not JSON") from exc


class Outbound:
    def __init__(self, user_agent: str = f"fhir-server/{__version__}") -> None:
        self.user_agent = user_agent
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _pool(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(follow_redirects=False, headers={"User-Agent": self.user_agent})
            return self._client

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        form: dict[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> Answer:
        """One request; any status is an Answer (the caller decides what a 4xx means), a transport failure or an
        answer over ``max_bytes`` an OutboundError."""
        try:
            with self._pool().stream(
                method, url, headers=headers, content=content, data=form, auth=basic_auth, timeout=timeout
            ) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise OutboundError("too-large", f"the answer was larger than {max_bytes} bytes")
                return Answer(response.status_code, response.headers, bytes(body))
        except httpx.TimeoutException:
            raise OutboundError("timeout", f"no answer within {timeout:g} s") from None
        except httpx.ConnectError:
            raise OutboundError("connect", "could not connect") from None
        except httpx.HTTPError as exc:  # the exception's text holds the URL: only its kind is kept
            raise OutboundError("transport", f"the connection failed ({type(exc).__name__})") from None

    def get_json(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> tuple[int, Any]:
        """(status, the body as JSON or None when it is not JSON)."""
        answer = self.request("GET", url, headers={"Accept": "application/json", **(headers or {})}, timeout=timeout,
                              max_bytes=max_bytes)  # fmt: skip
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


# The process's one client for calls that need no EHR rate cap (JWK Sets, identity providers, the SMART app's
# token exchange and reads, CDS Hooks reads).
OUTBOUND = Outbound()
