"""SMART App Launch 2.0 scopes (v1 and v2 syntax, query-constrained v2 scopes); docs/security.md: a malformed scope
grants nothing."""

from __future__ import annotations

import pytest

from fhir_server.auth.scopes import parse_scope, parse_scopes


@pytest.mark.parametrize(
    ("scope", "context", "resource_type", "permissions"),
    [
        ("patient/Observation.read", "patient", "Observation", "rs"),
        ("user/*.write", "user", "*", "cud"),
        ("system/*.*", "system", "*", "cruds"),
        ("patient/QuestionnaireResponse.c", "patient", "QuestionnaireResponse", "c"),
        ("patient/Observation.rs", "patient", "Observation", "rs"),
        ("user/Flag.cruds", "user", "Flag", "cruds"),
        ("system/Patient.rs", "system", "Patient", "rs"),
    ],
)
def test_well_formed_scopes(scope, context, resource_type, permissions):
    parsed = parse_scope(scope)
    assert parsed is not None
    assert (parsed.context, parsed.resource_type, parsed.permissions) == (
        context,
        resource_type,
        frozenset(permissions),
    )


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.sr",  # v2 letters out of order
        "patient/Observation.rr",  # repeated
        "patient/Observation.x",
        "patient/Observation.",
        "patient/Frobnicator.read",  # not a resource type
        "doctor/Observation.read",  # not a context
        "patient/observation.read",
        "patient/Observation.read?category=survey",  # v1 takes no query
        "patient/Observation.rs?",  # empty query
        "patient/Observation.rs?category=",  # empty value
        "patient/*",
        "Observation.read",
    ],
)
def test_malformed_scopes_grant_nothing(scope):
    assert parse_scope(scope) is None
    grant = parse_scopes(f"{scope} launch openid")
    assert grant.resource_scopes == () and grant.rejected == (scope,)
    assert not grant.allows("Observation", "r")


def test_query_constrained_scope():
    scope = parse_scope("patient/Observation.rs?category=survey&code=http://loinc.org|1")
    assert scope.query == (("category", "survey"), ("code", "http://loinc.org|1"))
    grant = parse_scopes("patient/Observation.rs?category=survey")
    assert grant.scopes_for("Observation", "s") and not grant.allows("Observation", "s")  # needs the resource


def test_grant_answers_per_interaction_and_context():
    grant = parse_scopes("launch/patient openid fhirUser offline_access patient/QuestionnaireResponse.c user/Flag.read")
    assert grant.other == {"launch/patient", "openid", "fhirUser", "offline_access"}
    assert grant.allows("QuestionnaireResponse", "c") and not grant.allows("QuestionnaireResponse", "r")
    assert grant.allows("Flag", "r") and grant.allows("Flag", "s") and not grant.allows("Flag", "u")
    assert grant.allows("Flag", "r", context="user") and not grant.allows("Flag", "r", context="patient")
    assert not grant.allows("Observation", "r")
    assert grant.contexts == {"patient", "user"}
    assert parse_scopes("system/*.read").allows("AuditEvent", "s")
