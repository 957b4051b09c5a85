"""``Subscription/$status`` and ``Subscription/[id]/$events`` (Subscriptions Backport STU 1.1): what the server
knows of a subscription's delivery, and its past events again, both as notification Bundles.  ``$events`` re-reads
each event's focus under the creator's access policy, exactly as a notification would (subscriptions/delivery.py);
the caller needs read access to the Subscription itself."""

from __future__ import annotations

from typing import Any

from fhir_server.auth.access import AccessPolicy
from fhir_server.errors import FhirError
from fhir_server.operations.base import OperationContext, standard
from fhir_server.store import subscription_store as store
from fhir_server.store.records import instant, utc_now
from fhir_server.subscriptions.delivery import load_events
from fhir_server.subscriptions.notification import bundle, status_parameters

BACKPORT_OPS = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition"
MAX_EVENTS = 100


def _row(ctx: OperationContext, subscription_id: str) -> dict[str, Any]:
    ctx.fhir.read("Subscription", subscription_id)  # 404/410 and the caller's access, as a read
    row = store.get(ctx.fhir.repo.read_engine, subscription_id)
    if row is None:
        raise FhirError(404, "not-found", f"Subscription/{subscription_id} is not registered for delivery")
    return row


def status(ctx: OperationContext) -> dict[str, Any]:
    """One Parameters per Subscription asked for (instance: that one; type: ``id`` and ``status`` filters, else
    every one the caller may read), in a searchset Bundle."""
    ctx.fhir.policy.require("Subscription", "r")
    if ctx.resource_id:
        rows = [_row(ctx, ctx.resource_id)]
    else:
        ids = {i for k, v in ctx.params if k == "id" for i in v.split(",") if i}
        statuses = {s for k, v in ctx.params if k == "status" for s in v.split(",") if s}
        rows = [
            r
            for r in store.list_all(ctx.fhir.repo.read_engine)
            if (not ids or r["id"] in ids) and (not statuses or r["status"] in statuses)
        ]
        rows = [r for r in rows if _readable(ctx, r["id"])]
    entries = [
        {"resource": status_parameters(r, ctx.base_url, "query-status", []), "search": {"mode": "match"}} for r in rows
    ]
    found: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "timestamp": instant(utc_now())}
    found["total"] = len(entries)
    if entries:  # R4 JSON has no empty arrays
        found["entry"] = entries
    return found


def _readable(ctx: OperationContext, subscription_id: str) -> bool:
    try:
        ctx.fhir.read("Subscription", subscription_id)
    except FhirError:
        return False
    return True


def events(ctx: OperationContext) -> dict[str, Any]:
    """Events ``eventsSinceNumber``..``eventsUntilNumber`` (at most 100), as a ``query-event`` notification."""
    if not ctx.resource_id:
        raise FhirError(400, "not-supported", "$events is invoked on one Subscription: Subscription/[id]/$events")
    row = _row(ctx, ctx.resource_id)
    since, until = _number(ctx, "eventsSinceNumber"), _number(ctx, "eventsUntilNumber")
    content = ctx.one("content")
    if content is not None and content not in ("empty", "id-only", "full-resource"):
        raise FhirError(400, "value", "content is empty, id-only or full-resource")
    if content is not None and _narrower(content, row["content"]):  # a hint, never more than was subscribed
        row = {**row, "content": content}
    found = store.events(ctx.fhir.repo.read_engine, row["id"], since, until, MAX_EVENTS)
    listed = load_events(
        ctx.fhir.repo,
        AccessPolicy(ctx.fhir.registry, patients_see_clinician_only=ctx.fhir.settings.client_sees_therapist_rating),
        row,
        found,
    )
    if any(not e.focus for e in listed):
        row = {**row, "content": "empty"}
    return bundle(row, ctx.base_url, "query-event", listed)


def _narrower(asked: str, subscribed: str) -> bool:
    order = ("empty", "id-only", "full-resource")
    return order.index(asked) <= order.index(subscribed)


def _number(ctx: OperationContext, name: str) -> int | None:
    value = ctx.one(name)
    if value is None:
        return None
    if not value.isdigit():
        raise FhirError(400, "value", f"{name} is an event number (digits)")
    return int(value)


STATUS = standard(
    "status",
    status,
    canonicals={"*": f"{BACKPORT_OPS}/backport-subscription-status"},
    resources=["Subscription"],
    levels={"type", "instance"},
    documentation="The delivery status of Subscriptions (type level: `id` and `status` filters), as "
    "SubscriptionStatus Parameters (backport-subscription-status-r4) in a searchset Bundle.",
)
EVENTS = standard(
    "events",
    events,
    canonicals={"*": f"{BACKPORT_OPS}/backport-subscription-events"},
    resources=["Subscription"],
    levels={"instance"},
    documentation="A Subscription's past events (`eventsSinceNumber`, `eventsUntilNumber`, at most 100; "
    "`content` may only narrow the subscribed payload), as a query-event notification Bundle; each focus "
    "re-checked against the Subscription creator's access.",
)
