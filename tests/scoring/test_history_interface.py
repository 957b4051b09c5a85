"""Scoring owns the interface of its reads (scoring/history.py) and store/ implements it: scoring never imports
the implementation (store/clinical.py) or the store's write session, and the write session offers every member
of scoring's ``ScoringSession`` with the same parameters (no type checker runs here, so this is the check)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from fhir_server.scoring.history import ClinicalHistory, ScoringSession
from fhir_server.store.session import WriteSession

SCORING = Path(__file__).resolve().parents[2] / "fhir_server" / "scoring"
IMPLEMENTATION = ("fhir_server.store.clinical", "fhir_server.store.session", "fhir_server.store.repository")


def test_scoring_never_imports_the_store_implementation_of_its_reads():
    found = []
    for path in sorted(SCORING.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            found += [f"{path.name}: {n}" for n in names if n.startswith(IMPLEMENTATION)]
    assert not found


def test_the_write_session_implements_scorings_session():
    members = {m for protocol in (ClinicalHistory, ScoringSession) for m in vars(protocol) if not m.startswith("_")}
    assert {"now", "current", "create", "rewrite", "update", "scoring_context"} <= members
    for name in members:
        wanted, offered = getattr(ScoringSession, name), getattr(WriteSession, name)
        if isinstance(wanted, property):
            assert isinstance(offered, property), name
            continue
        assert list(inspect.signature(wanted).parameters) == list(inspect.signature(offered).parameters), name
