"""FHIR_SERVER_SUBSCRIPTION_ENDPOINTS: URL prefixes that end at a path boundary, checked as the server reads them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fhir_server.config import Settings
from fhir_server.subscriptions.checks import endpoint_allowed


def test_prefixes_end_at_a_path_boundary():
    prefixes = Settings(_env_file=None, subscription_endpoints=["https://hooks.example.org"]).subscription_endpoints
    assert prefixes == ["https://hooks.example.org/"]
    assert endpoint_allowed("https://hooks.example.org/fhir/notify", prefixes)
    assert endpoint_allowed("https://hooks.example.org", prefixes)
    assert not endpoint_allowed("https://hooks.example.org.evil.example/notify", prefixes)
    assert not endpoint_allowed("https://hooks.example.org:8443/notify", prefixes)
    assert endpoint_allowed("https://anywhere.example/", [])  # no list: the other checks alone


@pytest.mark.parametrize("bad", ["ftp://hooks.example.org/", "hooks.example.org", "https://h.example/?a=1", "https://"])
def test_a_bad_prefix_stops_the_server_with_its_name(bad):
    with pytest.raises(ValidationError, match="FHIR_SERVER_SUBSCRIPTION_ENDPOINTS"):
        Settings(_env_file=None, subscription_endpoints=[bad])
