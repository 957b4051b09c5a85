"""A report's statements run side by side on several connections (store/report_connections.py), and the report
is still one picture of the data: on PostgreSQL every connection reads the snapshot the first one exported, so a
write committed while the report runs is in none of them; SQLite gets one connection."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from fhir_server.store.report_connections import report_connection, report_connections
from tests.api.fhir import post
from tests.support.server import RunningServer

COUNT = text("SELECT count(*) FROM resources")


def test_the_connections_of_a_report_read_one_snapshot(
    server: RunningServer, backend: str, client: httpx.Client
) -> None:
    engine = server.app.state.read_engine
    with report_connections(engine, 3) as connections:
        if backend == "sqlite":
            assert len(connections) == 1
            return
        assert len(connections) == 3
        # written and committed after the first connection took its snapshot, before the others read anything
        assert post(client, "Patient", {"resourceType": "Patient", "gender": "other"}).status_code == 201
        seen = [connection.execute(COUNT).scalar_one() for connection in connections]
        with engine.connect() as now:
            after = now.execute(COUNT).scalar_one()
    assert seen == [seen[0]] * 3 and after == seen[0] + 1


def test_a_snapshot_id_is_checked_before_it_reaches_sql(server: RunningServer, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("snapshots are PostgreSQL's")
    engine = server.app.state.read_engine
    with pytest.raises(ValueError, match="not a snapshot id"), report_connection(engine, "1'; DROP TABLE resources"):
        pass
