"""The EHR FHIR servers a CDS client may send the service to (docs/security.md: outbound requests go only to addresses
the configuration names; a caller never chooses where the server connects).

A hook request's ``fhirServer`` is chosen by whoever holds a CDS client's signing key, so without a check the
service would connect wherever it is told (internal ports, cloud metadata addresses) and send the request's
``fhirAuthorization`` token there.  Each CDS client is therefore registered with the FHIR base URL(s) it may name
(``fhir-server cds-clients add --fhir-server URL``), and a request is compared with them in one canonical form:
lower-case scheme and host, no default port, no userinfo, query or fragment, no trailing slash.  The comparison is
exact, never a prefix or a pattern, so ``https://ehr.example/fhir.evil.test`` or a differently spelled host does
not match.  Plain http is accepted only for loopback hosts (a local EHR in development and the tests).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MAX_URL_LENGTH = 2048
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
# RFC 3986 path characters: unreserved, percent-encoded, sub-delims, ':' and '@' (and the '/' between segments)
_PATH = re.compile(r"^[A-Za-z0-9\-._~%!$&'()*+,;=:@/]*$")
_DOT_SEGMENTS = {".", "..", "%2e", "%2e%2e", ".%2e", "%2e."}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FhirBaseError(ValueError):
    """The URL cannot be a registered FHIR base (the message says why, without repeating the URL)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise(url: object) -> str:
    """The canonical form of a FHIR base URL, or FhirBaseError."""
    if not isinstance(url, str) or not url:
        raise FhirBaseError("the FHIR base must be a URL")
    if len(url) > MAX_URL_LENGTH or not url.isascii() or "\\" in url or any(c.isspace() or c < " " for c in url):
        # parsers disagree about such URLs (urllib vs httpx vs the OS resolver): refuse rather than guess
        raise FhirBaseError("the FHIR base must be a plain ASCII URL without spaces or backslashes")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise FhirBaseError("the FHIR base must be an https URL")
    if "?" in url or "#" in url:
        raise FhirBaseError("the FHIR base must not carry a query or fragment")
    if "@" in parts.netloc:
        raise FhirBaseError("the FHIR base must not carry a user name or password")
    host = parts.hostname or ""
    if not host or not _valid_host(host):
        raise FhirBaseError("the FHIR base must name a host")
    try:
        port = parts.port
    except ValueError:
        raise FhirBaseError("the FHIR base has an invalid port") from None
    if port == 0:
        raise FhirBaseError("the FHIR base has an invalid port")
    if scheme == "http" and not is_loopback(host):
        raise FhirBaseError("the FHIR base must be an https URL (http only for localhost / loopback addresses)")
    path = parts.path.rstrip("/")
    if not _PATH.match(path) or any(s.lower() in _DOT_SEGMENTS for s in path.split("/")):
        raise FhirBaseError("the FHIR base's path holds characters or '.' / '..' segments that are not allowed")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, path, "", ""))


def _valid_host(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return bool(_DNS_NAME.match(host))
    return not (isinstance(address, ipaddress.IPv6Address) and address.scope_id)


def registered(requested: object, allowed: Iterable[str]) -> str | None:
    """The registered base ``requested`` names exactly (after normalisation), else None."""
    try:
        wanted = normalise(requested)
    except FhirBaseError:
        return None
    return wanted if wanted in set(allowed) else None


def within(base: str, url: object) -> str | None:
    """``url`` (an EHR's paging link) rebuilt from its canonical parts when it lies under ``base``, else None:
    a ``next`` link is the remote server's choice and must not take the service (and the token) elsewhere."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    if parts.fragment:
        return None
    try:
        root = normalise(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
    except FhirBaseError:
        return None
    if root != base and not root.startswith(base + "/"):
        return None
    return f"{root}?{parts.query}" if parts.query else root
