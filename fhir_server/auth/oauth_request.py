"""The framework-free request authlib's grants see: parameters, headers and where this server is.

The web layer (fhir_server/web/oauth_adapter.py) builds one from a Starlette request; the login flow builds one
from the authorization request it kept in the login session.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.requests import OAuth2Payload, OAuth2Request

from fhir_server.auth.models import GrantContext


@dataclass(frozen=True)
class Site:
    """This server as the client sees it (FHIR_SERVER_PUBLIC_URL, or derived from the request)."""

    origin: str  # scheme://host[:port]
    issuer: str  # {origin}/auth
    fhir_base: str  # the audience of access tokens
    audiences: tuple[str, ...]  # accepted spellings of fhir_base in ``aud``

    @property
    def token_endpoint(self) -> str:
        return f"{self.origin}/auth/token"

    @property
    def authorize_endpoint(self) -> str:
        return f"{self.origin}/auth/authorize"


class Headers(dict[str, str]):
    """Case-insensitive lookups (authlib asks for ``Authorization``; HTTP/2 sends ``authorization``)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


class _Payload(OAuth2Payload):
    def __init__(self, params: list[tuple[str, str]]) -> None:
        self._data = {k: v for k, v in reversed(params)}  # the first value of a repeated parameter
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for k, v in params:
            self._datalist[k].append(v)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class FormRequest(OAuth2Request):
    """An OAuth request: query parameters (GET /authorize) or a form body (everything else)."""

    def __init__(
        self, method: str, uri: str, headers: list[tuple[str, str]], params: list[tuple[str, str]], site: Site
    ) -> None:
        # authlib refuses plain http except on loopback addresses (InsecureTransportError): OAuth needs TLS.
        super().__init__(method, uri, headers=Headers(headers))
        self.params = params
        self.payload = _Payload(params)
        self.site = site
        # Filled in while the request is handled:
        self.launch: dict[str, Any] | None = None  # the EHR launch context named by ``launch``
        self.grant_context: GrantContext | None = None  # chosen by the login flow before the code is issued
        self.grant_scope: str | None = None  # a refresh token's whole grant (the access token may get less)
        self.refresh_record: dict[str, Any] | None = None  # the refresh token to persist in save_token

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data

    @property
    def args(self) -> dict[str, str]:
        return self.payload.data

    def first(self, name: str) -> str | None:
        value = self.payload.data.get(name)
        return value if value else None
