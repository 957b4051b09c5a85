"""The launch reads a language from the EHR's SMART style only on the EHR's own origin: a token response must not
make this server fetch an address of its choosing (docs/security.md, outbound requests)."""

from __future__ import annotations

import pytest

from fhir_server.smart.launch import same_origin

EHR = "https://ehr.example/fhir/r4"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://ehr.example/styles/v1.json", True),
        ("https://EHR.example:443/styles/v1.json", True),
        ("https://ehr.example:8443/styles/v1.json", False),
        ("http://ehr.example/styles/v1.json", False),
        ("https://169.254.169.254/latest/meta-data", False),
        ("https://ehr.example.attacker.test/style.json", False),
        ("https://user@attacker.test/?ehr.example", False),
        ("file:///etc/passwd", False),
        ("https://[::1", False),
    ],
)
def test_only_the_ehrs_own_origin(url: str, allowed: bool) -> None:
    assert same_origin(url, EHR) is allowed
