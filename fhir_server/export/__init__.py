"""FHIR Bulk Data Access 2.0 ``$export``: a kick-off becomes a durable job (``jobs``, from ``request``), which the
export worker (``worker``, ``runner``) writes as NDJSON files, one per type, read with the search engine's own
queries under the client's access policy (``queries``), into the export storage (``storage``).  README "Bulk
export"; docs/security.md on who may fetch the files."""
