"""ASGI entry point for uvicorn workers: ``uvicorn fhir_server.asgi:app``."""

from fhir_server.app import create_app

app = create_app(owns_process=True)  # the process serves only this app: see freeze_startup_objects
