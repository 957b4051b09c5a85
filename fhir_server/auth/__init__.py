"""Authorization: SMART scopes and (next) the authorization server, token validation and audit.

Framework-free: nothing here imports FastAPI (DESIGN.md house rule 7).
"""
