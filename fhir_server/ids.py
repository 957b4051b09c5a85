"""Ids for the resources the server creates: UUID version 7 (RFC 9562), time-ordered.

A version 7 UUID starts with the Unix time in milliseconds, then 74 bits (below).  Ids made close together sort
together, so the rows of new resources land at the end of every index keyed by id (the resource table's key, the
versions' and each search-index table's ``resource_id`` index) instead of on a random page of each.  SQLite writes
every page a transaction changed to its WAL: with random (version 4) ids a scored submission dirtied a page per
row and index, and SQLite's throughput rose by 18-31 % with these (bench/README.md).  On PostgreSQL,
whose WAL holds changed rows rather than pages, the gain shows only once indexes outgrow memory (fewer pages
read and written back, fewer full-page images after a checkpoint), which is why HAPI FHIR uses sequential ids.

Ids are also monotonic within one process: ``uuid_utils.uuid7`` (the Rust ``uuid`` crate's generator) keeps a
42-bit counter after the millisecond (rand_a and the top 30 bits of rand_b), seeded at random each millisecond and
incremented within one, so consecutive ids are strictly increasing as text, the way they are stored and sorted.
The hand-made generator this replaced drew all 74 bits at random: half of the ids made within one millisecond sorted
before their predecessor (49,888 of 100,000 consecutive ids), and it was ten times slower (2.9 µs an id against
0.28 µs).

The creation time an id carries to the millisecond is what the resource's ``meta.lastUpdated`` already says to
anyone who may read it; the 32 random bits of each id and the random start of each millisecond's counter keep ids
unguessable (they are not secrets: reads are authorized).  Python has ``uuid.uuid7`` only from 3.14.
"""

from __future__ import annotations

import os

import uuid_utils

# The package's advice: a forked child must not replay its parent's random state (serve --workers spawns its
# workers, but a fork by anything else must not produce the parent's next ids).
os.register_at_fork(after_in_child=uuid_utils.reseed_rng)


def new_id() -> str:
    """A fresh resource id: a version 7 UUID in its usual text form (36 characters, a valid FHIR id), greater than
    every id this process made before."""
    return str(uuid_utils.uuid7())
