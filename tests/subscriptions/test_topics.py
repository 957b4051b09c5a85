"""The topics as data (subscriptions/topics.json) and the Subscription checks, without a server."""

from __future__ import annotations

import pytest

from fhir_server.errors import FhirError
from fhir_server.search.registry import default_registry
from fhir_server.subscriptions.checks import read_settings
from fhir_server.subscriptions.topics import topic_types, topics
from tests.subscriptions.support import FLAGS, RESPONSES, SCORES, subscription

SCORED = {"system": "http://fit-fhir.org/fhir/scored-observation", "value": "r#total"}


def test_each_topic_fires_on_its_writes_only():
    assert topic_types() == {"Flag", "Observation", "QuestionnaireResponse"}
    flags, scores, responses = topics()[FLAGS], topics()[SCORES], topics()[RESPONSES]
    assert flags.fires("create", {"status": "active"}) and not flags.fires("create", {"status": "inactive"})
    assert flags.fires("update", {"status": "inactive"}) and not flags.fires("update", {"status": "active"})
    assert scores.fires("create", {"identifier": [SCORED]}) and scores.fires("update", {"identifier": [SCORED]})
    assert not scores.fires("create", {"identifier": [{"system": "urn:other", "value": "x"}]})
    assert responses.fires("update", {"status": "completed"}) and not responses.fires("create", {"status": "amended"})


def test_settings_read_from_a_backport_subscription():
    resource = subscription(FLAGS, "https://hooks.example.org/x", filters=("Flag?patient=Patient/1&_id=x",),
                            heartbeat=30, max_count=5)  # fmt: skip
    settings = read_settings(resource, default_registry(), "create")
    assert settings.topic.resource == "Flag" and settings.filters == ("patient=Patient/1&_id=x",)
    assert (settings.content, settings.heartbeat_seconds, settings.max_count, settings.timeout_seconds) == (
        "full-resource",
        30,
        5,
        10,
    )
    assert settings.headers == ("X-Test: yes",)


@pytest.mark.parametrize(
    "endpoint",
    ["http://10.0.0.1/hook", "ftp://example.org/x", "https://user:pw@example.org/x", "not a url", "http://[::2]/x"],
)
def test_endpoints_outside_https_or_loopback_are_refused(endpoint):
    with pytest.raises(FhirError) as refused:
        read_settings(subscription(FLAGS, endpoint), default_registry(), "create")
    assert refused.value.status == 422


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]:9/x"])
def test_loopback_http_is_allowed_when_local_endpoints_are(endpoint):
    resource = subscription(FLAGS, endpoint)
    assert read_settings(resource, default_registry(), "create", local_endpoints=True).endpoint == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8080/hook",
        "https://localhost/hook",
        "https://127.8.0.1/hook",
        "http://[::1]:9000/hook",
        "https://169.254.169.254/latest/meta-data",
    ],
)
def test_endpoints_on_the_servers_own_machine_are_refused_unless_the_operator_allows_them(endpoint):
    """A client allowed to write a Subscription must not make the server POST to services that trust its machine
    (loopback, a cloud's link-local metadata service); FHIR_SERVER_SUBSCRIPTION_LOCAL_ENDPOINTS allows loopback
    receivers (development, these tests)."""
    resource = subscription(FLAGS, endpoint)
    with pytest.raises(FhirError) as refused:
        read_settings(resource, default_registry(), "create")
    assert "own machine or a link-local address" in refused.value.issues[0].diagnostics
    assert refused.value.issues[0].expression == ["Subscription.channel.endpoint"]
    if "169.254" not in endpoint:
        assert read_settings(resource, default_registry(), "create", local_endpoints=True).endpoint == endpoint
    else:  # link-local stays refused over http too, and https elsewhere is accepted either way
        ok = subscription(FLAGS, "https://receiver.example.org/hook")
        assert read_settings(ok, default_registry(), "create").endpoint == "https://receiver.example.org/hook"
