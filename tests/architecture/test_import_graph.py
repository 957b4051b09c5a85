"""The arrows that must never exist (docs/architecture.md, "The import rules"), checked on the source with
``ast``: every module's imports, at any depth (a function-level import counts as much as a top-level one).

- Nothing below HTTP imports HTTP: engine/, store/, scoring/, search/ and validation/ never import api/ or web/.
- SQLAlchemy only inside store/.
- httpx only in the one EHR client (ehr/client.py).
- FastAPI and Starlette only in api/, web/ and app.py (and the few HTTP-edge modules named below).

``PENDING`` lists the places that still break a rule while issue 18 moves them (each entry must still be true:
a fixed one must be removed from the list, so the list only shrinks).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fhir_server"

BELOW_HTTP = ("engine", "store", "scoring", "search", "validation")
HTTP = ("fhir_server.api", "fhir_server.web")
HTTP_EDGE = ("api", "web", "app.py", "middleware.py", "errors.py", "deps.py", "serving.py", "asgi.py")
EHR_CLIENT = ("ehr/client.py",)

# (module path relative to fhir_server/, imported top-level package) still to be moved behind its wall
PENDING: set[tuple[str, str]] = {
    ("auth/admin.py", "sqlalchemy"),
    ("auth/assertions.py", "httpx"),
    ("auth/bearer.py", "httpx"),
    ("auth/commands.py", "sqlalchemy"),
    ("auth/cors.py", "sqlalchemy"),
    ("auth/external_idp.py", "httpx"),
    ("auth/keys.py", "sqlalchemy"),
    ("auth/login_sessions.py", "sqlalchemy"),
    ("auth/revocation.py", "sqlalchemy"),
    ("auth/server.py", "sqlalchemy"),
    ("auth/throttle.py", "sqlalchemy"),
    ("cds_hooks/admin.py", "sqlalchemy"),
    ("cds_hooks/data.py", "httpx"),
    ("cds_hooks/routes.py", "fastapi"),
    ("cds_hooks/routes.py", "starlette"),
    ("cds_hooks/security.py", "sqlalchemy"),
    ("ehr/delivery.py", "httpx"),
    ("ehr/outbox.py", "sqlalchemy"),
    ("ehr/registry.py", "sqlalchemy"),
    ("ehr/tokens.py", "httpx"),
    ("smart/launch.py", "httpx"),
    ("smart/launch.py", "sqlalchemy"),
    ("smart/sandbox.py", "sqlalchemy"),
    ("smart/sessions.py", "sqlalchemy"),
    ("smart/sessions.py", "starlette"),
    ("web/clinician_routes.py", "httpx"),
}


def _modules() -> list[tuple[str, set[str]]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("store/migrations/"):
            continue  # Alembic migrations are SQLAlchemy by nature, and inside store/
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        found.append((relative, imported))
    return found


MODULES = _modules()


def _inside(relative: str, places: tuple[str, ...]) -> bool:
    return any(relative == p or relative.startswith(p.rstrip("/") + "/") for p in places)


RULES = {
    # rule → (does a module at this path importing this name break it?)
    "http-below": lambda relative, name: _inside(relative, BELOW_HTTP) and name.startswith(HTTP),
    "sqlalchemy": lambda relative, name: (
        name.split(".")[0] in ("sqlalchemy", "alembic") and not _inside(relative, ("store",))
    ),
    "httpx": lambda relative, name: name.split(".")[0] == "httpx" and not _inside(relative, EHR_CLIENT),
    "web-framework": lambda relative, name: (
        name.split(".")[0] in ("fastapi", "starlette") and not _inside(relative, HTTP_EDGE)
    ),
}


def _breaking(rule: str) -> set[tuple[str, str]]:
    """(module, the package it imports against the rule: fhir_server.api, sqlalchemy, ...)."""
    broken = set()
    for relative, imported in MODULES:
        for name in imported:
            if RULES[rule](relative, name):
                package = ".".join(name.split(".")[:2]) if name.startswith("fhir_server.") else name.split(".")[0]
                broken.add((relative, package))
    return broken


@pytest.mark.parametrize("rule", sorted(RULES))
def test_no_forbidden_import(rule):
    broken = _breaking(rule) - PENDING
    assert not broken, f"{rule}: " + ", ".join(f"{m} imports {p}" for m, p in sorted(broken))


def test_the_pending_list_only_shrinks():
    everything = set().union(*(_breaking(rule) for rule in RULES))
    stale = PENDING - everything
    assert not stale, "fixed: remove from PENDING: " + ", ".join(f"{m} ({p})" for m, p in sorted(stale))
