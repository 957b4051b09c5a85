"""A statement's text for psycopg (store/fixed.py ``psycopg_text``), shared by the kept-plan statements and a
combination index's prepared page: text literals inlined for the planner (quoted, and a ``%`` doubled, which
psycopg would otherwise read as a placeholder), the caller's values left as parameters, and an IN list of the
shape rendered out."""

from __future__ import annotations

import pytest
from sqlalchemy import String, bindparam, create_engine, literal, literal_column, select

from fhir_server.store.engine import normalise_url
from fhir_server.store.fixed import Fixed, psycopg_text
from tests.support.databases import POSTGRES_ENV, postgres_admin_url

AWKWARD = "50% o'clock"  # a quote and a percent sign


def _statement():  # type: ignore[no-untyped-def]
    return select(literal_column("1")).where(
        literal(AWKWARD) == bindparam("value", "v", type_=String),
        bindparam("kind", "k", type_=String).in_(["a%", "b"]),
    )


def test_text_literals_are_inlined_and_the_values_stay_parameters():
    sql, defaults = psycopg_text(_statement(), inline=True, values={"value", "kind"}, expand=True)
    assert "'50%% o''clock'" in sql and "'a%%'" in sql and "'b'" in sql
    assert "%(value)s" in sql and "%(kind)s" in sql
    assert AWKWARD not in defaults.values()
    plain, kept = psycopg_text(_statement())
    assert AWKWARD in kept.values() and "clock" not in plain  # not inlined unless asked


@pytest.mark.parametrize("keep_plan", [False, True])
def test_a_fixed_statement_with_a_percent_sign_runs_on_postgresql(keep_plan):
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL half skipped: {POSTGRES_ENV} unset")
    fixed = Fixed(
        select(literal_column("1")).where(literal(AWKWARD) == bindparam("value", type_=String)), keep_plan=keep_plan
    )
    engine = create_engine(normalise_url(admin))
    try:
        with engine.connect() as conn:
            assert fixed.fetch(conn, {"value": AWKWARD}) == [(1,)]
            assert fixed.fetch(conn, {"value": "50 o'clock"}) == []
    finally:
        engine.dispose()
