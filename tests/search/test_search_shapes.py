"""Searches planned once per shape (store/search_shapes.py): a kept statement never carries one query's value into
another's.

For pairs of queries of one shape and different values, the statements are built for each and compiled for both
databases: the SQL must be the same text, every bound parameter that is not one of the query's values (``v<n>``)
must hold the same constant in both, and the values bound must be the second query's own.  A value written into
the SQL without the Binder shows up here as a constant that differs between the two.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from fhir_server.search.compartments import compartment_clause
from fhir_server.search.query import parse_search
from fhir_server.search.registry import default_registry
from fhir_server.store.search_shapes import Binder, Keyset, Plans, values_for, walk
from fhir_server.store.search_sql import _statements

REGISTRY = default_registry()
SNOMED = "http://snomed.info/sct"

# (type, query with {0}, {1} ... placeholders, first values, second values)
PAIRS = [
    ("Observation", "subject=Patient/{0}&code=" + SNOMED + "|{1}&_sort=-date&_count=20", ("p1", "111"), ("p2", "222")),
    ("Flag", "patient={0}&_id={1}", ("p1", "f1"), ("p2", "f2")),
    ("Patient", "family={0}", ("Smith", "x"), ("Berg", "x")),
    ("Patient", "family:exact={0}", ("Smith",), ("van der Berg",)),
    ("Patient", "family:contains={0}", ("mi_%",), ("er",)),
    ("Patient", "_id={0},{1}", ("a", "b"), ("c", "d")),
    ("Patient", "birthdate=ge{0}", ("1990-01-01",), ("2001-05-05",)),
    ("Patient", "birthdate=ap{0}", ("1990-01-01",), ("2001-05-05",)),
    ("Patient", "birthdate=ne{0}&_sort=birthdate", ("1990",), ("2001",)),
    ("Patient", "_lastUpdated=gt{0}", ("2026-01-01T00:00:00Z",), ("2025-02-02T10:00:00Z",)),
    ("Observation", "value-quantity=gt{0}|http://unitsofmeasure.org|{1}", ("5.0", "mg"), ("7.5", "kg")),
    ("Observation", "value-quantity=ap{0}||{1}", ("5", "mg"), ("70", "kg")),
    ("Observation", "value-quantity=eq{0}", ("5.5",), ("6.25",)),
    ("Observation", "code:text={0}", ("blood",), ("weight",)),
    ("Observation", "code=|{0}", ("abc",), ("def",)),
    ("Observation", "code={0}|", ("http://a",), ("http://b",)),
    ("Observation", "identifier={0}|{1}", ("urn:a", "1"), ("urn:b", "2")),
    ("QuestionnaireResponse", "questionnaire={0}|{1}", ("http://x/Q", "1.0"), ("http://y/Q", "2.0")),
    ("QuestionnaireResponse", "questionnaire:below={0}|{1}", ("http://x/Q", "1"), ("http://y/Q", "2")),
    ("Questionnaire", "url={0}|{1}", ("http://x/Q", "1.0"), ("http://y/Q", "2.0")),
    ("Questionnaire", "url:below={0}|{1}", ("http://x/Q", "1"), ("http://y/Q", "2")),
    ("Questionnaire", "url:below={0}", ("http://x/",), ("http://y/",)),
    ("Questionnaire", "url:above={0}", ("http://x/a/b",), ("http://y/c",)),
    ("Observation", "subject:Patient.name={0}", ("Smith",), ("Jones",)),
    ("Patient", "_has:Observation:patient:code={0}", ("1234",), ("5678",)),
    ("Observation", "code-value-quantity=http://loinc.org|{0}$gt{1}", ("1234", "5"), ("5678", "9.5")),
    ("Observation", "subject={0}&_total=accurate", ("Patient/a",), ("Patient/b",)),
    ("Patient", "name:missing=true&gender={0}", ("male",), ("female",)),
]


def _query(resource_type: str, template: str, values: tuple[str, ...]):
    text = template.format(*values)
    params = [tuple(part.split("=", 1)) for part in text.split("&")]
    return parse_search(resource_type, params, REGISTRY)


def _built(query, keyset, dialect):
    slots: dict = {}
    shape, values = walk(query, keyset, slots)
    binder = Binder(slots)
    statements = _statements(query, keyset, binder)
    compiled = {name: s.compile(dialect=dialect) for name, s in statements.items()}
    return shape, values, binder.derived, compiled


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"])
@pytest.mark.parametrize(("resource_type", "template", "first", "second"), PAIRS, ids=[p[1][:40] for p in PAIRS])
def test_a_kept_statement_carries_no_value_of_the_query_it_was_built_for(
    dialect, resource_type, template, first, second
) -> None:
    one, two = _query(resource_type, template, first), _query(resource_type, template, second)
    shape1, _, derived1, compiled1 = _built(one, None, dialect)
    shape2, values2, derived2, compiled2 = _built(two, None, dialect)
    assert shape1 == shape2, "same shape"
    assert derived1 == derived2
    bound2 = values_for(derived1, values2)  # the second query's values, as a kept plan would bind them
    differing = 0
    for name, statement in compiled1.items():
        assert statement.string == compiled2[name].string
        kept, fresh = statement.construct_params(), compiled2[name].construct_params()
        for key, value in kept.items():
            if key.startswith("v"):
                assert _same(bound2[key], fresh[key]), f"{key}: the kept plan would bind another value"
                differing += value != fresh[key]
            else:
                assert value == fresh[key], f"{key} holds a query's value outside the Binder: {value!r}"
    assert differing, "the pair's values should differ in the SQL (else this case shows nothing)"


def _same(a, b) -> bool:
    if isinstance(a, datetime) and isinstance(b, datetime):  # ``ap`` margins are measured from now
        return abs((a - b).total_seconds()) < 1
    return a == b


def test_a_compartment_owner_and_a_paging_cursor_are_values() -> None:
    dialect = postgresql.dialect()
    queries = []
    for owner, last in (("p1", datetime(2024, 1, 1, tzinfo=UTC)), ("p2", datetime(2025, 6, 1, tzinfo=UTC))):
        query = _query("Observation", "code=" + SNOMED + "|1&_sort=-date", ())
        query.clauses.append(compartment_clause(REGISTRY, "Patient", owner, "Observation"))
        queries.append((query, Keyset((last, f"id-{owner}"), "next")))
    (q1, k1), (q2, k2) = queries
    shape1, _, derived, compiled1 = _built(q1, k1, dialect)
    shape2, values2, _, compiled2 = _built(q2, k2, dialect)
    assert shape1 == shape2
    params = values_for(derived, values2)
    assert "p2" in params.values() and "id-p2" in params.values()
    assert "p1" not in params.values()
    assert compiled1["page"].string == compiled2["page"].string


def test_the_shape_tells_apart_what_changes_the_sql() -> None:
    def shape(resource_type: str, text: str) -> tuple:
        return walk(_query(resource_type, text, ()), None)[0]

    assert shape("Patient", "family=a") == shape("Patient", "family=b")
    assert shape("Patient", "family=a") != shape("Patient", "family:exact=a")
    assert shape("Patient", "birthdate=ge2020") != shape("Patient", "birthdate=le2020")
    assert shape("Observation", "code=a|b") != shape("Observation", "code=|b")  # no system vs a system
    assert shape("Observation", "code=a|b") != shape("Observation", "code=a|b,c|d")
    assert shape("Patient", "_count=10&family=a") != shape("Patient", "_count=20&family=a")
    assert shape("Patient", "_sort=family&family=a") != shape("Patient", "_sort=-family&family=a")


def test_plans_are_kept_per_shape_and_dropped_oldest_first() -> None:
    plans = Plans(size=2)
    built: list[str] = []

    def build(query):
        def make(binder):
            built.append(query.resource_type)
            return _statements(query, None, binder)

        return make

    for text in ("family=a", "family=b", "family=c"):
        query = _query("Patient", text, ())
        _, params = plans.plan("postgresql", query, None, build(query))
        assert params == {"v0_starts": text.split("=")[1] + "%"}  # this query's own value
    assert (plans.hits, plans.misses) == (2, 1)
    for resource_type in ("Observation", "Flag"):
        query = _query(resource_type, "_id=x", ())
        plans.plan("postgresql", query, None, build(query))
    query = _query("Patient", "family=d", ())
    plans.plan("postgresql", query, None, build(query))  # the Patient plan was dropped: built again
    assert built == ["Patient", "Observation", "Flag", "Patient"]


def test_one_object_in_two_places_is_a_shape_of_its_own():
    """A value-holding clause placed twice (the same object) binds one value; two equal-looking distinct clauses
    bind two.  Were their shapes the same, a plan built for one would bind the other's values wrongly."""
    from dataclasses import replace

    query = _query("Observation", "code=" + SNOMED + "|1&subject=Patient/a", ())
    shared = replace(query, clauses=[query.clauses[0], query.clauses[0]])
    distinct = replace(query, clauses=[query.clauses[0], _query("Observation", "code=" + SNOMED + "|2", ()).clauses[0]])
    assert walk(shared, None)[0] != walk(distinct, None)[0]
    for one in (shared, distinct):
        _, values, derived, compiled = _built(one, None, postgresql.dialect())
        bound = values_for(derived, values)
        fresh = compiled["page"].construct_params()
        assert {k: v for k, v in fresh.items() if k.startswith("v")} == bound
