"""Notification Bundles as the Subscriptions Backport defines them for R4 (STU 1.1): a Bundle of type ``history``
whose first entry is the SubscriptionStatus Parameters (profile ``backport-subscription-status-r4``), then, with
``id-only`` or ``full-resource`` content, one entry per event's focus resource.  Also what ``$status`` and
``$events`` answer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.store.records import instant, utc_now

STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"
NOTIFICATION_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4"
)


@dataclass(frozen=True)
class Event:
    number: int
    occurred: str  # instant
    focus: str  # Type/id
    resource: dict[str, Any] | None  # the version that fired it; None when not sent (empty, id-only, not readable)
    created: bool  # version 1: the event was its create


def _reference(base: str, path: str) -> str:
    return f"{base}/{path}" if base else path


def status_parameters(
    row: dict[str, Any], base: str, kind: str, events: Sequence[Event], *, status: str | None = None
) -> dict[str, Any]:
    """The SubscriptionStatus of one notification (or of ``$status``: kind ``query-status``)."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": _reference(base, f"Subscription/{row['id']}")}},
        {"name": "topic", "valueCanonical": row["topic"]},
        {"name": "status", "valueCode": status or row["status"]},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(row["events_since_start"])},
    ]
    for event in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": event.occurred},
        ]
        if row["content"] != "empty":
            parts.append({"name": "focus", "valueReference": {"reference": _reference(base, event.focus)}})
        parameters.append({"name": "notification-event", "part": parts})
    if row.get("error"):
        parameters.append({"name": "error", "valueCodeableConcept": {"text": row["error"]}})
    return {"resourceType": "Parameters", "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters}


def bundle(row: dict[str, Any], base: str, kind: str, events: Sequence[Event], *, status: str | None = None) -> dict:
    """A notification Bundle: the status first, then the focus resources (never for ``empty``)."""
    status_id = str(uuid.uuid4())
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{status_id}",
            "resource": {**status_parameters(row, base, kind, events, status=status), "id": status_id},
            "request": {"method": "GET", "url": _reference(base, f"Subscription/{row['id']}/$status")},
            "response": {"status": "200"},
        }
    ]
    if row["content"] != "empty":
        for event in events:
            entry: dict[str, Any] = {"fullUrl": _reference(base, event.focus)}
            if row["content"] == "full-resource" and event.resource is not None:
                entry["resource"] = event.resource
            if event.created:
                entry["request"] = {"method": "POST", "url": event.focus.partition("/")[0]}
            else:
                entry["request"] = {"method": "PUT", "url": event.focus}
            entry["response"] = {"status": "201" if event.created else "200"}
            entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": instant(utc_now()),
        "entry": entries,
    }
