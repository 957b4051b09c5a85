"""Discovery documents: SMART's ``.well-known/smart-configuration`` (SMART App Launch 2, "Conformance") and
OpenID Connect Discovery's ``openid-configuration``."""

from __future__ import annotations

from typing import Any

from fhir_server.auth.assertions import ALGORITHMS
from fhir_server.auth.keys import SIGNING_ALGORITHM
from fhir_server.auth.oauth_request import Site

CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "context-banner",
    "context-style",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
    "authorize-post",
]
SCOPES = [
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/*.rs",
    "user/*.cruds",
    "user/*.rs",
    "system/*.cruds",
    "system/*.rs",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
]
GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials"]
AUTH_METHODS = ["client_secret_basic", "private_key_jwt", "none"]


def smart_configuration(site: Site) -> dict[str, Any]:
    origin = site.origin
    return {
        "issuer": site.issuer,
        "jwks_uri": f"{origin}/auth/jwks",
        "authorization_endpoint": site.authorize_endpoint,
        "token_endpoint": site.token_endpoint,
        "introspection_endpoint": f"{origin}/auth/introspect",
        "revocation_endpoint": f"{origin}/auth/revoke",
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": sorted(ALGORITHMS),
        "grant_types_supported": GRANT_TYPES,
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def openid_configuration(site: Site) -> dict[str, Any]:
    origin = site.origin
    return {
        "issuer": site.issuer,
        "authorization_endpoint": site.authorize_endpoint,
        "token_endpoint": site.token_endpoint,
        "jwks_uri": f"{origin}/auth/jwks",
        "introspection_endpoint": f"{origin}/auth/introspect",
        "revocation_endpoint": f"{origin}/auth/revoke",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [SIGNING_ALGORITHM],
        "scopes_supported": SCOPES,
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "fhirUser",
            "name",
            "preferred_username",
        ],
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": sorted(ALGORITHMS),
        "code_challenge_methods_supported": ["S256"],
    }


# The SMART style sheet (SMART App Launch "Styles"): colours an embedded app may use to look at home.
SMART_STYLE = {
    "color_background": "#f7f7f5",
    "color_error": "#9b1c1c",
    "color_highlight": "#2f5d8a",
    "color_modal_backdrop": "",
    "color_success": "#2e6b30",
    "color_text": "#222222",
    "dim_border_radius": "4px",
    "dim_font_size": "14px",
    "dim_spacing_size": "16px",
    "font_family_body": "system-ui, sans-serif",
    "font_family_heading": "system-ui, sans-serif",
}
