"""A Binary's content itself (api/binary.py) is read and written through the same interactions as its FHIR JSON:
the same scopes, the same refusals, the same audit of a denial; no raw path around the policy (both databases)."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.access_data import admin
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint

RAW = {"Accept": "*/*"}


@pytest.fixture(scope="module")
def stored(guarded: RunningServer) -> str:
    with admin(guarded) as c:
        created = c.post("/Binary", content=b"scanned consent form", headers={"Content-Type": "application/pdf"})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def test_raw_reads_and_writes_need_the_same_scopes_as_fhir(guarded, stored):
    with client_for(guarded, mint(guarded, "system/Observation.rs")) as c:
        for accept in ("*/*", "application/fhir+json"):
            refused = c.get(f"/Binary/{stored}", headers={"Accept": accept})
            assert refused.status_code == 403, refused.text
            assert "insufficient_scope" in refused.headers["WWW-Authenticate"]
        assert c.get(f"/Binary/{stored}/_history/1", headers=RAW).status_code == 403
        assert c.post("/Binary", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 403
        assert c.put(f"/Binary/{stored}", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 403
    with client_for(guarded, mint(guarded, "system/Binary.r")) as c:
        served = c.get(f"/Binary/{stored}", headers=RAW)
        assert served.status_code == 200 and served.content == b"scanned consent form"
        assert c.post("/Binary", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 403
    with client_for(guarded, None) as c:
        assert c.get(f"/Binary/{stored}", headers=RAW).status_code == 401


def test_a_refused_raw_read_is_audited(guarded, stored):
    token = mint(guarded, "system/Observation.rs", client_id="raw-reader")
    with client_for(guarded, token) as c:
        assert c.get(f"/Binary/{stored}", headers=RAW).status_code == 403
    deadline = time.monotonic() + 10
    with client_for(guarded, mint(guarded, "system/AuditEvent.rs")) as audit:
        while True:
            events = audit.get("/AuditEvent", params={"outcome": "4", "_count": "500"}).json().get("entry", [])
            mine = [
                e["resource"]
                for e in events
                if any("raw-reader" in str(agent) for agent in e["resource"].get("agent", []))
            ]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert mine, "the refused raw read left no AuditEvent"


def test_a_patient_token_reaches_only_the_binaries_whose_security_context_is_its_patient(guarded):
    """Binary is outside R4's Patient compartment; its securityContext says whose it is.  A patient token reads its
    own (raw or FHIR), and no other: another patient's, another server's patient's, one naming something else, one
    naming no one — each answered as if it did not exist; its search of Binary is refused (nothing confines it in
    SQL); it writes a Binary only for itself."""
    uid = uuid.uuid4().hex[:8]
    mine, theirs = f"bin-a-{uid}", f"bin-b-{uid}"
    contexts = {
        "own": f"Patient/{mine}",
        "other": f"Patient/{theirs}",
        "elsewhere": f"https://other.example/fhir/Patient/{mine}",
        "document": f"DocumentReference/{uid}",
        "none": None,
    }
    ids = {}
    with admin(guarded) as c:
        for name, context in contexts.items():
            headers = {"Content-Type": "text/plain", **({"X-Security-Context": context} if context else {})}
            created = c.post("/Binary", content=f"{name} letter".encode(), headers=headers)
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]
    with client_for(guarded, mint(guarded, "patient/Binary.cruds", patient=mine)) as c:
        assert c.get(f"/Binary/{ids['own']}", headers=RAW).content == b"own letter"
        assert c.get(f"/Binary/{ids['own']}", headers={"Accept": "application/fhir+json"}).status_code == 200
        for name in ("other", "elsewhere", "document", "none"):
            for accept in ("*/*", "application/fhir+json"):
                hidden = c.get(f"/Binary/{ids[name]}", headers={"Accept": accept})
                assert hidden.status_code == 404, (name, accept, hidden.text)
            assert c.get(f"/Binary/{ids[name]}/_history/1", headers=RAW).status_code == 404, name
        searched = c.get("/Binary", headers={"Accept": "application/fhir+json"})
        assert searched.status_code == 403 and "search on Binary" in searched.text, searched.text
        own = {"Content-Type": "text/plain", "X-Security-Context": f"Patient/{mine}"}
        assert c.post("/Binary", content=b"mine", headers=own).status_code == 201
        for context in (f"Patient/{theirs}", None):
            headers = {"Content-Type": "text/plain", **({"X-Security-Context": context} if context else {})}
            refused = c.post("/Binary", content=b"not mine", headers=headers)
            assert refused.status_code in (403, 404), (context, refused.text)
        overwrite = c.put(f"/Binary/{ids['other']}", content=b"x", headers=own)
        assert overwrite.status_code in (403, 404), overwrite.text
