"""Browser-facing pages: HTTP glue, templates and static files (the decisions live in smart/ and auth/)."""
