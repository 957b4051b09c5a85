"""Browser- and HTTP-facing glue: the authorization server's routes, the authlib adapter and page security
headers; the SMART app's rating form; their templates and static files.  The decisions themselves live in
fhir_server/auth and fhir_server/smart (framework-free)."""
