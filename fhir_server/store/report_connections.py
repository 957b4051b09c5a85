"""The connections one report's statements run on (store/report_counts.py).

On PostgreSQL a report reads one snapshot in read-only REPEATABLE READ transactions of its own (every indicator of
a report counts the same data), without JIT (compiling a report's expressions took longer than running them: 1.3 s
of a 3 s statement at 500,000 Observations, bench/reporting.py) and with room to hash and sort in memory instead of
on disk.  The read engine's connections are autocommit, where SET LOCAL would be ignored: hence the transaction.

A report's statements are independent, so they can run side by side: ``report_connections`` opens several
transactions on **one** snapshot — the first exports it (``pg_export_snapshot``), the others adopt it (``SET
TRANSACTION SNAPSHOT``), as ``pg_dump --jobs`` does — and the report is still one consistent picture.  SQLite has
one connection's worth of work at a time: one connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from sqlalchemy import text

REPORT_WORK_MEM = "64MB"
_SNAPSHOT = re.compile(r"^[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+$")  # e.g. 00000003-0000001B-1


@contextmanager
def report_connection(engine: Any, snapshot: str | None = None) -> Iterator[Any]:
    """A connection for a report's statements (``snapshot``: one exported by another of the report's)."""
    with engine.connect() as connection:
        if connection.dialect.name != "postgresql":
            yield connection
            return
        connection = connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with connection.begin() as transaction:
            if snapshot is not None:  # must come first in the transaction; a utility statement: no parameters
                if not _SNAPSHOT.match(snapshot):
                    raise ValueError(f"not a snapshot id: {snapshot[:40]!r}")
                connection.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
            connection.execute(text("SET LOCAL jit = off"))
            connection.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
            yield connection
            transaction.rollback()  # nothing was written; rolled back, not committed


@contextmanager
def report_connections(engine: Any, count: int) -> Iterator[list[Any]]:
    """Up to ``count`` connections reading one snapshot (one on SQLite, or when ``count`` is 1)."""
    with ExitStack() as stack:
        first = stack.enter_context(report_connection(engine))
        if first.dialect.name != "postgresql" or count < 2:
            yield [first]
            return
        snapshot = first.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        others = [stack.enter_context(report_connection(engine, snapshot)) for _ in range(count - 1)]
        yield [first, *others]
