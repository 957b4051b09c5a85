"""SMART patient-context tokens are confined to the launch patient's compartment on every path (issue 6 point 3,
docs/security.md "Access"): a token for patient A never gets patient B's QuestionnaireResponse, Observation, Flag or
Provenance — through reads, versions, history, searches (chained, _has, _include, _revinclude, :iterate),
compartment searches, $everything, operations, batch and transaction entries, or a reused paging link.  A
resource outside the compartment answers exactly like one that does not exist (404)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.access_data import Records, returned_ids, seed
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint

SCOPES = {"v1": "launch/patient patient/*.read", "v2": "launch/patient patient/*.rs"}


@pytest.fixture(scope="module")
def records(guarded: RunningServer) -> tuple[Records, Records]:
    import uuid

    return seed(guarded, uuid.uuid4().hex[:10])


def _paths(a: Records, b: Records) -> list[tuple[str, str, dict | None]]:
    """(method, path, body) for every read path, aimed at B's records with A's token."""
    paths: list[tuple[str, str, dict | None]] = []
    for resource_type in ("Patient", "QuestionnaireResponse", "Observation", "Flag", "Provenance"):
        for rid in b.ids[resource_type]:
            paths += [
                ("GET", f"/{resource_type}/{rid}", None),
                ("GET", f"/{resource_type}/{rid}/_history/1", None),
                ("GET", f"/{resource_type}/{rid}/_history", None),
            ]
    bp = b.patient
    obs_ids = ",".join(sorted(b.ids["Observation"]))
    paths += [
        ("GET", f"/Observation?subject=Patient/{bp}", None),
        ("GET", f"/Observation?_id={obs_ids}", None),
        ("GET", f"/Flag?patient={bp}&status=active", None),
        ("GET", f"/QuestionnaireResponse?subject=Patient/{bp}", None),
        ("GET", f"/Provenance?patient={bp}", None),
        ("GET", f"/Patient?_id={bp}", None),
        ("GET", "/Patient", None),
        ("GET", "/Observation?_count=1000", None),
        ("GET", f"/Observation?patient={a.patient}&_include=Observation:derived-from", None),
        (
            "GET",
            f"/Observation?patient={a.patient}&_include=Observation:derived-from"
            "&_include:iterate=QuestionnaireResponse:subject",
            None,
        ),
        ("GET", f"/Observation?patient={a.patient}&_include=*", None),
        ("GET", f"/Patient?_id={a.patient}&_revinclude=Observation:focus", None),
        ("GET", "/Patient?_revinclude=Observation:focus&_revinclude=Flag:patient&_revinclude=Provenance:patient", None),
        ("GET", "/Observation?subject:Patient.family=Beta&_include=Observation:subject", None),
        ("GET", f"/Patient/{bp}/Observation", None),
        ("GET", f"/Patient/{bp}/Flag", None),
        ("GET", f"/Patient/{bp}/QuestionnaireResponse", None),
        ("GET", f"/Patient/{bp}/$everything", None),
        ("GET", f"/Patient/{a.patient}/$everything", None),
        ("GET", f"/Patient/{bp}/$alliance-summary", None),
        ("GET", f"/QuestionnaireResponse/{b.one('QuestionnaireResponse')}/$extract", None),
        ("GET", "/_history?_count=1000", None),
        ("GET", "/Observation/_history?_count=1000", None),
        ("GET", "/Flag/_history?_count=1000", None),
    ]
    entries = [{"request": {"method": "GET", "url": f"{t}/{i}"}} for t in ("Observation", "Flag") for i in b.ids[t]]
    entries.append({"request": {"method": "GET", "url": f"Observation?subject=Patient/{bp}"}})
    paths.append(("POST", "/", {"resourceType": "Bundle", "type": "batch", "entry": entries}))
    paths.append(("POST", "/", {"resourceType": "Bundle", "type": "transaction", "entry": entries[:1]}))
    return paths


@pytest.mark.parametrize("version", sorted(SCOPES))
def test_patient_token_never_reaches_another_patient(guarded, records, version):
    a, b = records
    forbidden_ids = b.all_ids()
    token = mint(guarded, SCOPES[version], patient=a.patient)
    with client_for(guarded, token) as c:
        for method, path, body in _paths(a, b):
            response = c.request(method, path, json=body)
            assert response.status_code != 500, (path, response.text)
            assert response.status_code in (200, 403, 404), (path, response.status_code, response.text)
            leaked = returned_ids(response.json()) & forbidden_ids
            assert not leaked, f"{method} {path} returned patient B's {sorted(leaked)}"
            is_direct_read = path.count("/") in (2, 4) and "?" not in path and not path.endswith("_history")
            if method == "GET" and is_direct_read and path.split("/")[2] in forbidden_ids:
                assert response.status_code == 404, (path, response.status_code)


def test_hidden_answers_like_missing(guarded, records):
    a, b = records
    with client_for(guarded, mint(guarded, SCOPES["v2"], patient=a.patient)) as c:
        hidden = c.get(f"/Observation/{b.one('Observation')}")
        missing = c.get("/Observation/no-such-observation")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"] == "not-found"


def test_chains_and_has_do_not_probe_through_another_patient(guarded, records):
    a, b = records
    with client_for(guarded, mint(guarded, SCOPES["v2"], patient=a.patient)) as c:
        # A's Observation is derivedFrom B's response: the chain may not look at B's response
        chained = c.get("/Observation", params={"derived-from:QuestionnaireResponse.subject": f"Patient/{b.patient}"})
        # B's Observation has focus = A: _has may not look at B's Observation
        has = c.get("/Patient", params={"_has:Observation:focus:code": "probe"})
        # the same chain through A's own responses works
        own = c.get("/Observation", params={"derived-from:QuestionnaireResponse.subject": f"Patient/{a.patient}"})
    assert chained.status_code == has.status_code == own.status_code == 200
    assert not chained.json().get("entry"), chained.text
    assert not has.json().get("entry"), has.text
    assert returned_ids(own.json()) & a.ids["Observation"]


def test_own_records_are_visible(guarded, records):
    a, _ = records
    with client_for(guarded, mint(guarded, SCOPES["v2"], patient=a.patient)) as c:
        for resource_type in ("QuestionnaireResponse", "Observation", "Flag"):
            assert c.get(f"/{resource_type}/{a.one(resource_type)}").status_code == 200
        everything = c.get(f"/Patient/{a.patient}/$everything", params={"_count": "1000"}).json()
        summary = c.get(f"/Patient/{a.patient}/$alliance-summary")
    assert a.ids["Observation"] <= returned_ids(everything)
    assert summary.status_code == 200, summary.text


def test_type_level_everything_is_the_launch_patients_own_record(guarded, records):
    """Patient/$everything (R4 Patient-everything at type level): the token's patient, never anyone else's; a
    caller without a launch patient is asked to name one (too-costly) instead of getting every patient."""
    a, b = records
    with client_for(guarded, mint(guarded, SCOPES["v2"], patient=a.patient)) as c:
        own = c.get("/Patient/$everything", params={"_count": "1000"})
    assert own.status_code == 200, own.text
    assert a.ids["Observation"] | {a.patient} <= returned_ids(own.json())
    assert not returned_ids(own.json()) & b.all_ids()
    with client_for(guarded, mint(guarded, "system/*.rs")) as c:
        everyone = c.get("/Patient/$everything")
    assert everyone.status_code == 400 and everyone.json()["issue"][0]["code"] == "too-costly"


def test_paging_links_are_bound_to_the_token(guarded, records):
    a, _ = records
    first = mint(guarded, SCOPES["v2"], patient=a.patient)
    other = mint(guarded, SCOPES["v2"], patient=a.patient)
    with client_for(guarded, first) as c:
        page = c.get("/Observation", params={"patient": a.patient, "_count": "1"}).json()
        next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
        query = {k: v[0] for k, v in parse_qs(urlsplit(next_url).query).items()}
        assert c.get("/Observation", params=query).status_code == 200
    with client_for(guarded, other) as c:
        reused = c.get("/Observation", params=query)
    assert reused.status_code == 403, reused.text
    assert "another access token" in reused.json()["issue"][0]["diagnostics"]


def test_unconfined_user_token_sees_both(guarded, records):
    a, b = records
    token = mint(guarded, "user/Observation.rs openid fhirUser", fhirUser="Practitioner/therapist-1")
    with client_for(guarded, token) as c:
        assert c.get(f"/Observation/{b.one('Observation')}").status_code == 200
        assert c.get(f"/Observation/{a.one('Observation')}").status_code == 200
        assert c.get(f"/Flag/{b.one('Flag')}").status_code == 403  # no Flag scope at all
