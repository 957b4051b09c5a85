"""The client's side between sessions: a Task that asks for a measure and names a delivery channel gets a one-time
link (``links.py``), sent by email or SMS through the message outbox (fhir_server/messaging) with reminders
(``messages.py`` says what they say); the link opens the form without an EHR session (web/link_routes.py)."""
