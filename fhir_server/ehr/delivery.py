"""One delivery attempt: a row's payload to its EHR, as a transaction Bundle where the EHR's CapabilityStatement
says it takes transactions (all or nothing), else one request per resource in dependency order.

Either way every write is keyed (the resource's identifier; for Provenance, which has none in R4, a ``meta.tag``):
a conditional create or update where the EHR offers them, else a search for the key before the write
(ehr/capabilities.py).  So an attempt whose answer was lost, or that failed half-way, is repeated without
creating anything twice.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fhir_server import fhirjson
from fhir_server.ehr import capabilities, payload
from fhir_server.ehr.client import DeliveryError, EhrHttp, failure
from fhir_server.ehr.registry import EhrRegistration
from fhir_server.ehr.tokens import BackendServicesTokens, TokenSource
from fhir_server.outbound import Answer
from fhir_server.store.repository import Repository

FHIR_JSON = "application/fhir+json"
CAPABILITY_TTL = 3600.0


class _Credentials:
    """The tokens one delivery may use, in order: the launch session's, then the Backend Services one."""

    def __init__(self, ehr: EhrRegistration, launch: str | None, backend: BackendServicesTokens) -> None:
        self.ehr = ehr
        self.backend = backend
        self.using_launch = launch is not None
        self._token = launch if launch is not None else backend.token_for(ehr)

    @property
    def token(self) -> str | None:
        return self._token

    def refused(self, status: int) -> bool:
        """The EHR answered 401/403 with the current token: True when there is another token to try."""
        if self.using_launch and self.ehr.backend_client_id:
            self.using_launch = False
            self._token = self.backend.token_for(self.ehr)
            return True
        if not self.using_launch and self._token is not None and status == 401:
            self.backend.forget(self.ehr)  # revoked or expired early: fetch a new one next attempt
        return False


class Delivery:
    def __init__(
        self, repo: Repository, http: EhrHttp, launch_tokens: TokenSource, backend: BackendServicesTokens
    ) -> None:
        self.repo = repo
        self.http = http
        self.launch_tokens = launch_tokens
        self.backend = backend
        self._capabilities: dict[str, tuple[capabilities.EhrCapabilities, float]] = {}
        self._lock = threading.Lock()

    def deliver(self, ehr: EhrRegistration, response_id: str, token_ref: str | None) -> int:
        """Send one row's payload; returns how many resources were written.  Raises DeliveryError or
        PayloadError."""
        entries = payload.build(self.repo, response_id, ehr.resource_types)
        if not entries:
            return 0
        offered = self.capabilities(ehr)
        credentials = _Credentials(ehr, self.launch_tokens.token_for(ehr, token_ref), self.backend)
        found = {
            entry.full_url: self._find(ehr, credentials, entry)
            for entry in entries
            if not offered.writes_conditionally(entry)
        }
        kinds = {entry.full_url: entry.resource_type for entry in entries}
        assigned = {url: f"{kinds[url]}/{rid}" for url, rid in found.items() if rid is not None}
        steps = capabilities.plan(entries, offered, found)
        if not steps:
            return 0
        if offered.transaction:
            self._as_transaction(ehr, credentials, steps, assigned)
        else:
            self._one_by_one(ehr, credentials, steps, assigned)
        return len(steps)

    def capabilities(self, ehr: EhrRegistration) -> capabilities.EhrCapabilities:
        """From the EHR's CapabilityStatement, cached for an hour."""
        with self._lock:
            cached = self._capabilities.get(ehr.issuer)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        response = self.http.request(
            ehr.id, ehr.max_requests_per_second, "GET", f"{ehr.issuer}/metadata", headers={"Accept": FHIR_JSON}
        )
        if response.status_code != 200:
            raise failure(response, "the EHR's CapabilityStatement")
        try:
            offered = capabilities.read_capabilities(response.json())
        except ValueError:
            raise DeliveryError("the EHR's CapabilityStatement is not readable", retryable=True) from None
        with self._lock:
            self._capabilities[ehr.issuer] = (offered, time.monotonic() + CAPABILITY_TTL)
        return offered

    # -- the ways of sending ------------------------------------------------------------------------------------
    def _find(self, ehr: EhrRegistration, credentials: _Credentials, entry: payload.Entry) -> str | None:
        """For an EHR that does not match keys itself: the id of its copy of ``entry`` (None: it has none).  Two
        copies mean someone else wrote one too; which to update is not ours to guess (as a conditional update
        answers 412)."""
        url = f"{ehr.issuer}/{entry.conditional_url}"
        response = self._send(ehr, credentials, "GET", url)
        if response.status_code != 200:
            raise failure(response, f"the EHR's search for an earlier copy of a {entry.resource_type}")
        try:
            bundle = response.json()
            ids = [
                e["resource"]["id"]
                for e in bundle.get("entry") or []
                if e.get("resource", {}).get("resourceType") == entry.resource_type
                and e.get("search", {}).get("mode", "match") == "match"
            ]
        except (ValueError, AttributeError, TypeError, KeyError):
            raise DeliveryError("the EHR's search answer is not readable", retryable=True) from None
        if len(ids) > 1:
            raise DeliveryError(
                f"the EHR holds {len(ids)} copies of a {entry.resource_type} sent once; an administrator must "
                "remove the extra ones",
                retryable=False,
                status=412,
            )
        return str(ids[0]) if ids else None

    def _as_transaction(
        self, ehr: EhrRegistration, credentials: _Credentials, steps: list[capabilities.Step], assigned: dict[str, str]
    ) -> None:
        bundle = capabilities.transaction_bundle(steps, assigned)
        response = self._send(ehr, credentials, "POST", ehr.issuer, content=fhirjson.dumps(bundle))
        if response.status_code != 200:
            raise failure(response, "the EHR refused the transaction")
        try:
            answers = [e.get("response", {}).get("status", "") for e in response.json().get("entry", [])]
        except (ValueError, AttributeError, TypeError):
            raise DeliveryError("the EHR's transaction response is not readable", retryable=True) from None
        if len(answers) != len(steps) or not all(str(a)[:1] == "2" for a in answers):
            raise DeliveryError("the EHR's transaction response does not confirm every entry", retryable=True)

    def _one_by_one(
        self, ehr: EhrRegistration, credentials: _Credentials, steps: list[capabilities.Step], assigned: dict[str, str]
    ) -> None:
        for step in steps:  # in dependency order: each step refers only to entries already there
            extra = {"If-None-Exist": step.if_none_exist} if step.if_none_exist else None
            body = fhirjson.dumps(step.body(assigned))
            response = self._send(ehr, credentials, step.method, f"{ehr.issuer}/{step.url}", content=body, extra=extra)
            if response.status_code not in (200, 201):
                raise failure(response, f"the EHR refused a {step.entry.resource_type}")
            kind = step.entry.resource_type
            assigned[step.entry.full_url] = f"{kind}/{_assigned_id(response, kind)}"

    def _send(
        self,
        ehr: EhrRegistration,
        credentials: _Credentials,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        extra: dict[str, str] | None = None,
    ) -> Answer:
        while True:
            headers = {"Accept": FHIR_JSON, **(extra or {})}
            if content is not None:
                headers["Content-Type"] = FHIR_JSON
            if credentials.token is not None:
                headers["Authorization"] = f"Bearer {credentials.token}"
            response = self.http.request(
                ehr.id, ehr.max_requests_per_second, method, url, content=content, headers=headers
            )
            if response.status_code in (401, 403) and credentials.refused(response.status_code):
                continue
            if response.status_code == 401 and credentials.token is None:
                raise DeliveryError(
                    "the EHR requires authorization and neither a launch token nor a backend client is configured",
                    retryable=False,
                    status=401,
                )
            return response


def _assigned_id(response: Answer, resource_type: str) -> str:
    """The EHR's id for what it stored or matched: from Location (…/Type/id[/_history/v]), else the body."""
    location = response.headers.get("location") or response.headers.get("content-location") or ""
    parts = [p for p in location.split("?")[0].split("/") if p]
    if resource_type in parts:
        index = len(parts) - 1 - parts[::-1].index(resource_type)
        if index + 1 < len(parts):
            return parts[index + 1]
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("resourceType") == resource_type and isinstance(body.get("id"), str):
        return body["id"]
    raise DeliveryError(f"the EHR stored a {resource_type} but did not say under which id", retryable=True)
