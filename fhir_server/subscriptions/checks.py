"""What a Subscription must say to be taken in (R4 Subscription with the Subscriptions Backport's profile, STU 1.1),
and the delivery settings read from it.  Every refusal is a 422 OperationOutcome naming the element."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.errors import FhirError
from fhir_server.search.query import parse_search
from fhir_server.search.registry import Registry
from fhir_server.subscriptions.topics import Topic, topics

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
PROFILE = f"{BACKPORT}/backport-subscription"
FILTER_CRITERIA = f"{BACKPORT}/backport-filter-criteria"
PAYLOAD_CONTENT = f"{BACKPORT}/backport-payload-content"
HEARTBEAT_PERIOD = f"{BACKPORT}/backport-heartbeat-period"
TIMEOUT = f"{BACKPORT}/backport-timeout"
MAX_COUNT = f"{BACKPORT}/backport-max-count"
CONTENTS = ("empty", "id-only", "full-resource")
PAYLOAD_TYPES = ("application/fhir+json", "application/json")
DEFAULT_TIMEOUT, MAX_TIMEOUT = 10, 60
DEFAULT_MAX_COUNT, MAX_MAX_COUNT = 20, 100
MIN_HEARTBEAT = 1
CLIENT_STATUSES = {"create": ("requested",), "update": ("requested", "active", "error", "off")}


@dataclass(frozen=True)
class Settings:
    topic: Topic
    filters: tuple[str, ...]  # search query strings of the topic's type
    endpoint: str
    headers: tuple[str, ...]
    content: str
    heartbeat_seconds: int | None
    timeout_seconds: int
    max_count: int
    status: str


def _refuse(message: str, expression: str) -> FhirError:
    return FhirError(422, "value", message, expression=[expression])


def _extensions(element: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(element, dict):
        return []
    return [e for e in element.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def _one_value(element: Any, url: str, kind: str) -> Any:
    found = _extensions(element, url)
    if len(found) > 1:
        raise _refuse(f"at most one {url.rsplit('/', 1)[1]} extension", "Subscription.channel")
    return found[0].get(kind) if found else None


def read_settings(
    resource: dict[str, Any],
    registry: Registry,
    interaction: str,
    *,
    local_endpoints: bool = False,
    allowed_endpoints: Sequence[str] = (),
) -> Settings:
    """The delivery settings of a valid Subscription; 422 naming the first thing this server cannot honour.
    ``local_endpoints``: the operator allows endpoints on this machine (FHIR_SERVER_SUBSCRIPTION_LOCAL_ENDPOINTS);
    ``allowed_endpoints``: the operator's URL prefixes (FHIR_SERVER_SUBSCRIPTION_ENDPOINTS), if any."""
    status = resource.get("status")
    if status not in CLIENT_STATUSES[interaction]:
        allowed = " or ".join(CLIENT_STATUSES[interaction])
        raise _refuse(f"A Subscription is {'created' if interaction == 'create' else 'updated'} with status "
                      f"{allowed}; the server moves it on after the handshake", "Subscription.status")  # fmt: skip
    topic = topics().get(resource.get("criteria") or "")
    if topic is None:
        known = ", ".join(sorted(topics()))
        raise _refuse(f"criteria must be one of this server's subscription topics: {known}", "Subscription.criteria")
    filters = tuple(_filters(resource, topic, registry))
    channel = resource.get("channel") or {}
    if channel.get("type") != "rest-hook":
        raise _refuse("Only the rest-hook channel is supported", "Subscription.channel.type")
    endpoint = _endpoint(channel.get("endpoint"), local_endpoints)
    if not endpoint_allowed(endpoint, allowed_endpoints):
        raise _refuse("channel.endpoint is not among the endpoints this server's operator allows subscriptions to "
                      "notify", "Subscription.channel.endpoint")  # fmt: skip
    payload = channel.get("payload")
    if payload is not None and payload not in PAYLOAD_TYPES:
        raise _refuse(f"channel.payload must be one of {', '.join(PAYLOAD_TYPES)}", "Subscription.channel.payload")
    content = _one_value(channel.get("_payload"), PAYLOAD_CONTENT, "valueCode") or "empty"
    if content not in CONTENTS:
        raise _refuse(f"payload content must be one of {', '.join(CONTENTS)}", "Subscription.channel.payload")
    if payload is None and content != "empty":
        raise _refuse("a payload content other than empty needs channel.payload", "Subscription.channel.payload")
    heartbeat = _one_value(channel, HEARTBEAT_PERIOD, "valueUnsignedInt")
    if heartbeat is not None and (not isinstance(heartbeat, int) or heartbeat < MIN_HEARTBEAT):
        raise _refuse(f"heartbeat period must be at least {MIN_HEARTBEAT} s", "Subscription.channel")
    timeout = _one_value(channel, TIMEOUT, "valueUnsignedInt") or DEFAULT_TIMEOUT
    if not isinstance(timeout, int) or not 1 <= timeout <= MAX_TIMEOUT:
        raise _refuse(f"timeout must be 1-{MAX_TIMEOUT} s", "Subscription.channel")
    max_count = _one_value(channel, MAX_COUNT, "valuePositiveInt") or DEFAULT_MAX_COUNT
    if not isinstance(max_count, int) or not 1 <= max_count <= MAX_MAX_COUNT:
        raise _refuse(f"maxCount must be 1-{MAX_MAX_COUNT}", "Subscription.channel")
    headers = tuple(h for h in channel.get("header") or [] if isinstance(h, str))
    if any(":" not in h or "\n" in h or "\r" in h for h in headers):
        raise _refuse("each channel.header is 'Name: value' on one line", "Subscription.channel.header")
    return Settings(topic, filters, endpoint, headers, content, heartbeat, timeout, max_count, status)


def _filters(resource: dict[str, Any], topic: Topic, registry: Registry) -> list[str]:
    """``Type?param=value`` filters (``_criteria``'s filter-criteria extensions), each a search the server runs."""
    found = []
    for extension in _extensions(resource.get("_criteria"), FILTER_CRITERIA):
        value = extension.get("valueString")
        kind, sep, query = (value or "").partition("?")
        if not sep or kind != topic.resource or not query:
            raise _refuse(f"a filter is '{topic.resource}?parameter=value', not '{(value or '')[:80]}'",
                          "Subscription.criteria")  # fmt: skip
        params = parse_qsl(query, keep_blank_values=True)
        for name, given in params:
            if name.split(":")[0] not in topic.filters or not given:
                allowed = ", ".join(sorted(topic.filters))
                raise _refuse(f"this topic filters {topic.resource} by {allowed} (with a value), not '{name[:40]}'",
                              "Subscription.criteria")  # fmt: skip
        parse_search(topic.resource, params, registry, strict=True)  # the search's own 400 on a bad value
        found.append(query)
    return found


def _endpoint(endpoint: Any, local_endpoints: bool) -> str:
    """https anywhere else; this machine (loopback) and link-local addresses (a cloud's metadata service) only when
    the operator allows local endpoints, and then over http too (a receiver beside the server, tests, development):
    a client with Subscription write scope must not make this server POST to services that trust its machine."""
    parts = urlsplit(endpoint if isinstance(endpoint, str) else "")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise _refuse("channel.endpoint must be an absolute https URL", "Subscription.channel.endpoint")
    local = _loopback(parts.hostname)
    if (local or _link_local(parts.hostname)) and not local_endpoints:
        raise _refuse("channel.endpoint may not be on this server's own machine or a link-local address",
                      "Subscription.channel.endpoint")  # fmt: skip
    if parts.scheme == "http" and not local:
        raise _refuse("channel.endpoint must use https", "Subscription.channel.endpoint")
    if parts.username or parts.password:
        raise _refuse("channel.endpoint may not carry credentials; use channel.header", "Subscription.channel.endpoint")
    return str(endpoint)


def endpoint_allowed(endpoint: str, prefixes: Sequence[str]) -> bool:
    """Whether ``endpoint`` starts with one of the operator's prefixes (each ending in '/', config.py), or is one
    without its last '/'; every endpoint when there are none."""
    return not prefixes or any(endpoint.startswith(p) or endpoint == p[:-1] for p in prefixes)


def _link_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_link_local
    except ValueError:
        return False


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
