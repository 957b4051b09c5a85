"""Browser- and HTTP-facing glue for the authorization server: routes, the authlib adapter, page security
headers, templates and static files.  The decisions themselves live in fhir_server/auth (framework-free)."""
