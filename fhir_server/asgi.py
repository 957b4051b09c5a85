"""ASGI entry point for uvicorn workers: ``uvicorn fhir_server.asgi:app``.

Proxy headers are handled by the app (middleware.TrustedProxyHeaders, from FHIR_SERVER_TRUSTED_PROXIES), not by
uvicorn: ``fhir-server serve`` turns uvicorn's off.  Running uvicorn yourself, pass ``--no-proxy-headers``:
uvicorn otherwise believes X-Forwarded-For from 127.0.0.1 before this app sees the request, and the address it
writes cannot be undone here.
"""

from fhir_server.app import create_app
from fhir_server.middleware import TrustedProxyHeaders

app = create_app(owns_process=True)  # the process serves only this app: see freeze_startup_objects
# Added last, so outermost: the request-id and access-log middleware, CORS and the routes all see its result.
app.add_middleware(TrustedProxyHeaders, trusted=app.state.settings.trusted_proxies)
