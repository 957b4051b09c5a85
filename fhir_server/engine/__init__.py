"""The FHIR engine: interactions, batch and transaction processing, conditional logic and library sync, knowing
nothing of HTTP.  Below it: storage, search, validation and scoring; above it: api/ (HTTP), operations/, auth/
(the guard that wraps it per request), the SMART app and the CLI."""
