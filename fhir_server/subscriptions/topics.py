"""The subscription topics this server offers, read from ``topics.json``: data, not code.  Each names one resource
type, the writes of it that are an event (create or update, with element values to match), and the search
parameters a Subscription's filter may use.  R4 has no SubscriptionTopic resource; the Subscriptions Backport has
servers declare each topic's canonical in the CapabilityStatement (api/capability.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

TOPICS_FILE = Path(__file__).with_name("topics.json")


@dataclass(frozen=True)
class Trigger:
    interaction: str  # create | update
    match: tuple[tuple[str, frozenset[str]], ...]  # (dotted path, values one of which the path must hold)


@dataclass(frozen=True)
class Topic:
    url: str
    title: str
    description: str
    resource: str
    triggers: tuple[Trigger, ...]
    filters: frozenset[str]

    def fires(self, interaction: str, resource: dict[str, Any]) -> bool:
        """Whether this write of ``resource`` is an event of the topic."""
        return any(
            t.interaction == interaction and all(values & set(_values_at(resource, path)) for path, values in t.match)
            for t in self.triggers
        )


def _values_at(node: Any, path: str) -> list[str]:
    """The primitive values at a dotted path, through lists (``identifier.system``)."""
    found = [node]
    for step in path.split("."):
        nxt: list[Any] = []
        for item in found:
            value = item.get(step) if isinstance(item, dict) else None
            nxt.extend(value if isinstance(value, list) else [] if value is None else [value])
        found = nxt
    return [v for v in found if isinstance(v, str)]


@cache
def topics() -> dict[str, Topic]:
    """Topic canonical → topic."""
    loaded = json.loads(TOPICS_FILE.read_text(encoding="utf-8"))
    return {
        t["url"]: Topic(
            t["url"],
            t["title"],
            t["description"],
            t["resource"],
            tuple(
                Trigger(tr["interaction"], tuple((m["path"], frozenset(m["in"])) for m in tr["match"]))
                for tr in t["triggers"]
            ),
            frozenset(t["filters"]),
        )
        for t in loaded
    }


@cache
def topic_types() -> frozenset[str]:
    """The resource types some topic is about: only their writes are looked at."""
    return frozenset(t.resource for t in topics().values())
