"""The arrows that must never exist (docs/architecture.md, "The import rules"), checked on the source with
``ast``: every module's imports, at any depth (a function-level import counts as much as a top-level one).

- Nothing below HTTP imports HTTP: engine/, store/, scoring/, search/ and validation/ never import api/ or web/.
- SQLAlchemy only inside store/.
- httpx only in the one outbound client (outbound.py): every call to an EHR, a foreign FHIR server, a JWK Set or
  an identity provider goes through it (timeouts, no redirects, size limits, safe errors in one place).
- FastAPI and Starlette only in api/, web/ and app.py (and the few HTTP-edge modules named below).
- No import loops between modules, except authlib's: its grants call back into the authorization server that
  registers them (auth/server.py ⇄ grants.py, token_endpoints.py, assertions.py).  Imports under
  ``if TYPE_CHECKING:`` are not loops (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fhir_server"

BELOW_HTTP = ("engine", "store", "scoring", "search", "validation")
HTTP = ("fhir_server.api", "fhir_server.web")
HTTP_EDGE = ("api", "web", "app.py", "middleware.py", "deps.py", "serving.py", "asgi.py")
OUTBOUND = ("outbound.py",)


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
    "httpx": lambda relative, name: name.split(".")[0] == "httpx" and not _inside(relative, OUTBOUND),
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
    broken = _breaking(rule)
    assert not broken, f"{rule}: " + ", ".join(f"{m} imports {p}" for m, p in sorted(broken))


@pytest.mark.parametrize(
    ("rule", "module", "name", "broken"),
    [
        ("http-below", "scoring/pipeline.py", "fhir_server.api.http", True),
        ("http-below", "engine/interactions.py", "fhir_server.web.form_pages", True),
        ("http-below", "web/cds_routes.py", "fhir_server.api.http", False),
        ("sqlalchemy", "auth/keys.py", "sqlalchemy.engine", True),
        ("sqlalchemy", "store/session.py", "sqlalchemy", False),
        ("httpx", "smart/launch.py", "httpx", True),
        ("httpx", "outbound.py", "httpx", False),
        ("web-framework", "smart/sessions.py", "starlette.requests", True),
        ("web-framework", "web/app_cookies.py", "starlette.requests", False),
    ],
)
def test_each_rule_catches_what_it_forbids(rule, module, name, broken):
    """The checks themselves: a forbidden import is caught, an allowed one is not."""
    assert RULES[rule](module, name) is broken


# authlib's grant ⇄ server back-reference: the server registers the grants, and each grant is handed the server
ALLOWED_LOOP = frozenset(
    {
        "fhir_server.auth.assertions",
        "fhir_server.auth.grants",
        "fhir_server.auth.server",
        "fhir_server.auth.token_endpoints",
    }
)


def _runtime_graph() -> dict[str, set[str]]:
    """Module → the fhir_server modules it imports when it runs (TYPE_CHECKING blocks left out)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        dotted = path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")
        dotted = dotted.removesuffix(".__init__")
        if ".migrations." not in dotted:
            names[dotted] = path
    graph: dict[str, set[str]] = {name: set() for name in names}
    for name, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {
            id(child)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
            for child in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            imported = []
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            graph[name] |= {i for i in imported if i in names and i != name}
    return graph


def _loops(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_loops():
    loops = [sorted(loop) for loop in _loops(_runtime_graph()) if loop != ALLOWED_LOOP]
    assert not loops, f"import loops: {loops}"


def test_the_loop_check_finds_a_loop():
    assert _loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
