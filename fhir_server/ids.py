"""Ids for the resources the server creates: UUID version 7 (RFC 9562), time-ordered.

A version 7 UUID starts with the Unix time in milliseconds, then 74 random bits.  Ids made close together sort
together, so the rows of new resources land at the end of every index keyed by id (the resource table's key, the
versions' and each search-index table's ``resource_id`` index) instead of on a random page of each.  SQLite writes
every page a transaction changed to its WAL: with random (version 4) ids a scored submission dirtied a page per
row and index, and SQLite's throughput rose by 18-31 % with these (bench/README.md).  On PostgreSQL,
whose WAL holds changed rows rather than pages, the gain shows only once indexes outgrow memory (fewer pages
read and written back, fewer full-page images after a checkpoint), which is why HAPI FHIR uses sequential ids.

The creation time an id carries to the millisecond is what the resource's ``meta.lastUpdated`` already says to
anyone who may read it; the 74 random bits keep ids unguessable (they are not secrets: reads are authorized).
Python has ``uuid.uuid7`` only from 3.14.
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_RANDOM_B = (1 << 62) - 1


def new_id() -> str:
    """A fresh resource id: a version 7 UUID in its usual text form (36 characters, a valid FHIR id)."""
    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 for rand_a, 62 for rand_b, 6 unused
    rand_a = (random >> 68) & 0xFFF
    return str(uuid.UUID(int=(millis << 80) | _VERSION_7 | (rand_a << 64) | _VARIANT_RFC | (random & _RANDOM_B)))
