"""Sending one notification to a rest-hook endpoint, through the process's outbound rules (outbound.py): no
redirects, a timeout, a size limit, errors that never carry the URL or a body.

What goes out is read at send time from the stored version that fired each event, and checked once more against
the creator's access policy (scopes read from the claims kept with the Subscription): a resource the creator could
not read is never sent, in full or by id, whatever the payload asks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from fhir_server import fhirjson
from fhir_server.auth.access import AccessPolicy
from fhir_server.outbound import Outbound, OutboundError
from fhir_server.store.records import instant, utc_now
from fhir_server.store.repository import Repository
from fhir_server.subscriptions.events import policy_of
from fhir_server.subscriptions.notification import Event, bundle

MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True)
class Failure(Exception):
    reason: str  # safe to store and show: never a URL, a body or PHI
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.reason


def load_events(repo: Repository, access: AccessPolicy, row: dict[str, Any], rows: list[dict[str, Any]]) -> list[Event]:
    """The events of ``rows`` as they go out: with the resource for ``full-resource``, focus only as allowed."""
    policy = policy_of(row, access)
    events = []
    for event in rows:
        stored = repo.vread(event["focus_type"], event["focus_id"], event["focus_version"])
        resource = fhirjson.loads_stored(stored.content) if stored is not None and stored.content else None
        readable = resource is not None and policy.sees(event["focus_type"], resource, "r")
        events.append(
            Event(
                number=int(event["event_number"]),
                occurred=instant(event["occurred_at"]),
                focus=f"{event['focus_type']}/{event['focus_id']}",
                resource=resource if readable and row["content"] == "full-resource" else None,
                created=event["focus_version"] == 1,
            )
        )
        if not readable:  # scopes narrowed since (a re-registered Subscription): not even the id goes out
            events[-1] = Event(events[-1].number, events[-1].occurred, "", None, events[-1].created)
    return events


def send(http: Outbound, row: dict[str, Any], base: str, kind: str, events: list[Event], status: str) -> None:
    """POST one notification Bundle; a ``Failure`` unless the endpoint answered 2xx."""
    if any(not e.focus for e in events):
        row = {**row, "content": "empty"}  # an unreadable focus: the whole notification goes out without ids
    body = fhirjson.dumps(bundle(row, base, kind, events, status=status))  # stored decimals keep their digits
    headers = {"Content-Type": "application/fhir+json"}
    for header in orjson.loads(row["headers"]):
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    try:
        answer = http.request("POST", row["endpoint"], headers=headers, content=body,
                              timeout=float(row["timeout_seconds"]), max_bytes=64 * 1024)  # fmt: skip
    except OutboundError as exc:
        raise Failure(f"the endpoint: {exc}") from None
    if 200 <= answer.status_code < 300:
        return
    raise Failure(f"the endpoint answered {answer.status_code}", _retry_after(answer.headers.get("Retry-After")))


def _retry_after(value: str | None) -> float | None:
    """Seconds, or an HTTP date; capped, so a receiver cannot park a subscription for days."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value).astimezone(UTC).replace(tzinfo=None) - utc_now()).total_seconds()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))
