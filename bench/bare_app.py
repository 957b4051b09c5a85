"""Baseline for the read benchmark: the least a FastAPI + psycopg endpoint can do for a read by id.

One sync endpoint, one thread-local autocommit psycopg connection per worker thread, one prepared primary-key
SELECT, the stored text returned as is.  Run by bench/core.py with the same uvicorn settings as the server.
"""

from __future__ import annotations

import os
import threading

import psycopg
from fastapi import FastAPI
from starlette.responses import Response

DATABASE_URL = os.environ["BARE_DATABASE_URL"]
_local = threading.local()
app = FastAPI()


def _connection() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = psycopg.connect(DATABASE_URL, autocommit=True)
    return conn


@app.get("/fhir/Patient/{resource_id}")
def read(resource_id: str) -> Response:
    row = (
        _connection()
        .execute(
            "SELECT content FROM resources WHERE resource_type = 'Patient' AND id = %s", (resource_id,), prepare=True
        )
        .fetchone()
    )
    if row is None:
        return Response(status_code=404)
    return Response(row[0], media_type="application/fhir+json")
