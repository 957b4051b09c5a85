"""Authorization: SMART scopes and (next) the authorization server, token validation and audit.

Framework-free: nothing here imports FastAPI (docs/architecture.md house rule 7).
"""
