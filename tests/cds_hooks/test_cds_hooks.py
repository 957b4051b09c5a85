"""CDS Hooks 2.0 service (issue 8 point 2): discovery; patient-view answered from prefetch alone and, without
prefetch, by reading the EHR's FHIR server with fhirAuthorization; the EHR's JWT verified against its registered
JWKS (unsigned, wrongly signed, unknown issuer, expired, too long-lived, replayed and misaddressed requests: 401);
card content for every flag kind; feedback recorded.

The EHR is a second instance of this server, started as its own process with authorization on; it scores the
client's sessions itself, so the Observations and Flags the service reads are the real thing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import create_engine

from fhir_server.auth.keys import KeyStore
from fhir_server.store import cds_store
from tests.support.databases import sqlite_database
from tests.support.process import ServerProcess, server_process
from tests.support.server import RunningServer

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
EHR_ISSUER = "https://ehr.test/cds-client"
SERVICE = "fit-alliance-patient-view"
MEASURES = "http://fit-fhir.org/fhir/CodeSystem/fit-measures"
ENGAGEMENT = "http://fit-fhir.org/fhir/CodeSystem/fit-engagement"


@pytest.fixture(scope="module")
def ehr() -> Iterator[tuple[ServerProcess, str]]:
    with sqlite_database() as url, server_process(url, FHIR_SERVER_AUTH_REQUIRED="true") as process:
        engine = create_engine(url)
        keys = KeyStore(engine)  # the EHR's own signing key, as its authorization server would use it
        now = int(time.time())
        token = keys.sign(
            {
                "iss": f"{process.root}/auth",
                "aud": process.fhir_base,
                "sub": "cds-test",
                "scope": "system/*.cruds",
                "jti": uuid.uuid4().hex,
                "iat": now,
                "exp": now + 3000,
            }
        )
        engine.dispose()
        yield process, token


@pytest.fixture(scope="module")
def patient(ehr) -> str:
    process, token = ehr
    patient_id = f"cds-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=process.fhir_base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        assert c.put(f"/Patient/{patient_id}", json={"resourceType": "Patient", "id": patient_id}).status_code == 201
        sessions = [
            ((95, 95, 95, 95), "2026-11-01"),
            ((90, 90, 90, 90), "2026-11-08"),
            ((85, 80, 85, 90), "2026-11-15"),
        ]
        for marks, day in sessions:
            names = ("relationship", "goals", "approach", "overall")
            response = {
                "resourceType": "QuestionnaireResponse",
                "questionnaire": SRS,
                "status": "completed",
                "subject": {"reference": f"Patient/{patient_id}"},
                "authored": f"{day}T16:00:00Z",
                "item": [{"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(names, marks, strict=True)],
            }
            assert c.post("/QuestionnaireResponse", json=response).status_code == 201
    return patient_id


@pytest.fixture(scope="module")
def ehr_key(server: RunningServer, ehr: tuple[ServerProcess, str]) -> RSAKey:
    key = RSAKey.generate_key(2048, parameters={"kid": "ehr-cds-1", "alg": "RS384", "use": "sig"}, private=True)
    jwks = orjson.dumps({"keys": [key.as_dict(private=False)]}).decode()
    # the EHR's FHIR base is registered with the client: the service reads from no other (test_fhir_server_allow_list)
    cds_store.add_client(server.app.state.engine, EHR_ISSUER, "Test EHR", None, jwks, [ehr[0].fhir_base])
    return key


def signed(server: RunningServer, key: RSAKey, service: str = SERVICE, header: dict | None = None, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": EHR_ISSUER,
        "sub": "ehr-client",
        "aud": f"{server.root}/cds-services/{service}",
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    header = header or {"alg": "RS384", "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=["RS384"])


def call(server: RunningServer, token: str | None, body: dict, service: str = SERVICE) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{server.root}/cds-services/{service}", json=body, headers=headers, timeout=30)


def prefetched(ehr: tuple[ServerProcess, str], patient: str, service: str = SERVICE) -> dict:
    """What an EHR sends: each of the service's advertised prefetch templates run against its FHIR server (the
    first page only, as EHRs do)."""
    process, token = ehr
    templates = next(
        s["prefetch"] for s in httpx.get(f"{process.root}/cds-services").json()["services"] if s["id"] == service
    )
    with httpx.Client(base_url=process.fhir_base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        return {
            key: c.get("/" + query.replace("{{context.patientId}}", patient)).json() for key, query in templates.items()
        }


def request_body(ehr: tuple[ServerProcess, str], patient: str, *, prefetch: bool) -> dict:
    process, token = ehr
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/therapist-1", "patientId": patient},
    }
    if prefetch:
        body["prefetch"] = prefetched(ehr, patient)
    else:
        body["fhirServer"] = process.fhir_base
        body["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Observation.read patient/Flag.read",
            "subject": "fit-cds",
        }
    return body


def test_discovery(server):
    services = {s["id"]: s for s in httpx.get(f"{server.root}/cds-services").json()["services"]}
    assert services[SERVICE]["hook"] == "patient-view"
    assert services["fit-alliance-encounter-start"]["hook"] == "encounter-start"
    assert "{{context.patientId}}" in services[SERVICE]["prefetch"]["observations"]
    assert "_sort=-date" in services[SERVICE]["prefetch"]["observations"]  # newest first (issue 17, finding 7)


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "fhirAuthorization"])
def test_cards_for_a_declining_alliance(server, ehr, patient, ehr_key, prefetch):
    answer = call(server, signed(server, ehr_key), request_body(ehr, patient, prefetch=prefetch))
    assert answer.status_code == 200, answer.text
    cards = answer.json()["cards"]
    summaries = [c["summary"] for c in cards]
    below = next(c for c in cards if "below 36" in c["summary"])
    assert below["indicator"] == "warning"
    assert below["summary"].startswith("SRS 34") and "lowest" in below["summary"], below["summary"]
    assert "Ask with curiosity" in below["detail"]
    assert any(s == "ORS not yet collected today" for s in summaries)
    assert any("withdrawal rupture" in s for s in summaries), summaries
    for card in cards:
        assert len(card["summary"]) < 140
        assert card["links"][0]["type"] == "smart" and card["links"][0]["url"].endswith("/app/launch")
        assert {r["code"] for r in card["overrideReasons"]} >= {"already-discussed"}


def test_without_prefetch_or_authorization_is_412(server, ehr_key, patient):
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": patient}}
    assert call(server, signed(server, ehr_key), body).status_code == 412


def test_bad_jwts_are_refused(server, ehr, patient, ehr_key):
    stranger = RSAKey.generate_key(2048, parameters={"kid": "ehr-cds-1"}, private=True)
    body = request_body(ehr, patient, prefetch=True)
    replayed = signed(server, ehr_key)
    assert call(server, replayed, body).status_code == 200
    now = int(time.time())
    bad = {
        "unsigned": None,
        "wrong signature": signed(server, stranger),
        "unknown issuer": signed(server, ehr_key, iss="https://elsewhere.test"),
        "expired": signed(server, ehr_key, exp=now - 600, iat=now - 700),
        "lives too long": signed(server, ehr_key, exp=now + 3600),
        "another service's audience": signed(server, ehr_key, aud="https://other.test/cds-services/x"),
        "replayed jti": replayed,
    }
    for name, token in bad.items():
        answer = call(server, token, body)
        assert answer.status_code == 401, (name, answer.text)
        assert answer.json()["resourceType"] == "OperationOutcome", name


def test_feedback_is_recorded(server, ehr, patient, ehr_key):
    cards = call(server, signed(server, ehr_key), request_body(ehr, patient, prefetch=True)).json()["cards"]
    card = cards[0]["uuid"]
    feedback = {
        "feedback": [
            {
                "card": card,
                "outcome": "overridden",
                "overrideReason": {
                    "reason": cards[0]["overrideReasons"][0],
                    "userComment": "talked about it at the start",
                },
                "outcomeTimestamp": "2026-11-22T10:00:00Z",
            }
        ]
    }
    answer = httpx.post(
        f"{server.root}/cds-services/{SERVICE}/feedback",
        json=feedback,
        headers={"Authorization": f"Bearer {signed(server, ehr_key)}"},
    )
    assert answer.status_code == 200, answer.text
    rows = cds_store.feedback_for(server.app.state.engine, card)
    assert rows[-1]["outcome"] == "overridden" and "already-discussed" in rows[-1]["override_reason"]
    unsigned = httpx.post(f"{server.root}/cds-services/{SERVICE}/feedback", json=feedback)
    assert unsigned.status_code == 401


def test_feedback_signed_for_the_feedback_endpoint_is_accepted(server, ehr, patient, ehr_key):
    """CDS Hooks 2.0: ``aud`` is the endpoint being called; for feedback, the feedback URL (issue 17, finding 4).
    A token for another endpoint is still refused."""
    card = call(server, signed(server, ehr_key), request_body(ehr, patient, prefetch=True)).json()["cards"][0]["uuid"]
    feedback = {"feedback": [{"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-12-06T10:00:00Z"}]}
    url = f"{server.root}/cds-services/{SERVICE}/feedback"
    for audience, status in ((url, 200), (f"{server.root}/cds-services/{SERVICE}/elsewhere", 401)):
        token = signed(server, ehr_key, aud=audience)
        answer = httpx.post(url, json=feedback, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == status, (audience, answer.text)
    assert [row["outcome"] for row in cds_store.feedback_for(server.app.state.engine, card)][-1:] == ["accepted"]


def test_a_card_for_every_flag_kind(server, ehr_key):
    flag_codes = Path(__file__).resolve().parents[2] / "terminology" / "codesystem-fit-flags.json"
    codes = [c["code"] for c in orjson.loads(flag_codes.read_bytes())["concept"]]
    flags = [
        {
            "resourceType": "Flag",
            "id": f"flag-{code}",
            "status": "active",
            "code": {
                "coding": [{"system": "http://fit-fhir.org/fhir/CodeSystem/fit-flags", "code": code}],
                "text": f'Message for {code}. Ask: "what about {code}?"',
            },
            "subject": {"reference": "Patient/kinds"},
        }
        for code in codes
    ]
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": "kinds"},
        "prefetch": {
            "observations": {"resourceType": "Bundle", "type": "searchset"},
            "flags": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": f} for f in flags]},
        },
    }
    answer = call(server, signed(server, ehr_key), body)
    assert answer.status_code == 200, answer.text
    cards = answer.json()["cards"]
    for code in codes:
        card = next(c for c in cards if c["summary"] == f"Message for {code}")
        assert f"what about {code}?" in card["detail"]
        assert orjson.loads(card["links"][0]["appContext"])["flag"] == f"Flag/flag-{code}"
    # + "ORS not yet collected today" and "No ORS in the last 14 days: ask the client" (cds_hooks/request_card.py)
    assert len({c["uuid"] for c in cards}) == len(cards) == len(codes) + 2


def test_cds_clients_cli(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'cds.db'}"}
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    public, private = tmp_path / "public.json", tmp_path / "private.json"
    public.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    private.write_bytes(orjson.dumps({"keys": [key.as_dict(private=True)]}))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "fhir_server", "cds-clients", *args], env=env, capture_output=True, text=True
        )

    added = cli(
        "add",
        "--issuer",
        "https://ehr.example",
        "--jwks-file",
        str(public),
        "--fhir-server",
        "https://EHR.example/fhir/",
    )
    assert added.returncode == 0, added.stderr
    listed = cli("list").stdout
    assert "https://ehr.example" in listed and "https://ehr.example/fhir\n" in listed  # stored normalised
    for bad in ("http://ehr.example/fhir", "https://user:pw@ehr.example/fhir", "https://ehr.example/fhir?x=1"):
        refused = cli("add", "--issuer", "https://ehr3.example", "--jwks-file", str(public), "--fhir-server", bad)
        assert refused.returncode == 1 and "--fhir-server" in refused.stderr, (bad, refused.stderr)
    refused = cli("add", "--issuer", "https://ehr2.example", "--jwks-file", str(private))
    assert refused.returncode == 1 and "private key" in refused.stderr
    assert cli("remove", "--issuer", "https://ehr.example").returncode == 0
    assert cli("remove", "--issuer", "https://ehr.example").returncode == 1


def test_encounter_start_service(server, ehr, patient, ehr_key):
    service = "fit-alliance-encounter-start"
    body = {**request_body(ehr, patient, prefetch=True), "hook": "encounter-start"}
    body["context"] = {**body["context"], "encounterId": "visit-1"}
    answer = call(server, signed(server, ehr_key, service=service), body, service=service)
    assert answer.status_code == 200, answer.text
    summaries = [c["summary"] for c in answer.json()["cards"]]
    assert "ORS not yet collected today" in summaries
    assert any("below 36" in s for s in summaries)
    wrong_hook = call(server, signed(server, ehr_key, service=service), {**body, "hook": "patient-view"}, service)
    assert wrong_hook.status_code == 400


def _ehr_client(ehr: tuple[ServerProcess, str]) -> httpx.Client:
    process, token = ehr
    return httpx.Client(base_url=process.fhir_base, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def _new_patient(ehr: tuple[ServerProcess, str], **fields) -> str:
    patient_id = f"cds-{uuid.uuid4().hex[:8]}"
    with _ehr_client(ehr) as client:
        answer = client.put(f"/Patient/{patient_id}", json={"resourceType": "Patient", "id": patient_id, **fields})
    assert answer.status_code == 201, answer.text
    return patient_id


def _start_card(answer: httpx.Response) -> dict | None:
    assert answer.status_code == 200, answer.text
    return next((c for c in answer.json()["cards"] if c["summary"].endswith("not yet collected today")), None)


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "fhirAuthorization"])
def test_a_young_child_is_asked_for_the_ycors_and_a_ycors_today_counts(server, ehr, ehr_key, prefetch):
    """Issue 17, finding 3: for a 4-year-old the card asks for the YCORS (not the adult ORS) and links it; once a
    YCORS was submitted today (it has nothing to score, so no Observation) the card is gone."""
    today = datetime.now(UTC).date()
    born = today.replace(year=today.year - 4, day=min(today.day, 28)).isoformat()
    patient = _new_patient(ehr, birthDate=born)
    card = _start_card(call(server, signed(server, ehr_key), request_body(ehr, patient, prefetch=prefetch)))
    assert card is not None and card["summary"] == "YCORS not yet collected today", card
    assert "Young Child Outcome Rating Scale (YCORS)" in card["detail"]
    assert orjson.loads(card["links"][0]["appContext"]) == {"view": "form", "measure": "ycors"}
    with _ehr_client(ehr) as client:
        ycors = {
            "resourceType": "QuestionnaireResponse",
            "questionnaire": "http://fit-fhir.org/fhir/Questionnaire/ycors|1.0.2",
            "status": "completed",
            "subject": {"reference": f"Patient/{patient}"},
            "authored": datetime.now(UTC).isoformat(timespec="seconds"),
            "item": [{"linkId": "feeling", "answer": [{"valueCoding": {"system": ENGAGEMENT, "code": "happy"}}]}],
        }
        assert client.post("/QuestionnaireResponse", json=ycors).status_code == 201
    body = request_body(ehr, patient, prefetch=prefetch)
    assert _start_card(call(server, signed(server, ehr_key), body)) is None


def test_an_adolescent_is_asked_for_the_ors_and_a_child_for_the_cors(server, ehr, ehr_key):
    today = datetime.now(UTC).date()
    for years, expected in ((15, "ORS"), (8, "CORS")):
        born = today.replace(year=today.year - years, day=min(today.day, 28)).isoformat()
        patient = _new_patient(ehr, birthDate=born)
        card = _start_card(call(server, signed(server, ehr_key), request_body(ehr, patient, prefetch=True)))
        assert card is not None and card["summary"] == f"{expected} not yet collected today", (years, card)


def test_prefetch_takes_the_newest_results_of_a_long_history(server, ehr, ehr_key):
    """Issue 17, finding 7: with more results than one prefetch page holds, today's ORS is on that page (the
    template sorted oldest first cut it, and the card asked for an ORS already given)."""
    patient = _new_patient(ehr)
    with _ehr_client(ehr) as client:
        old = [_ors_observation(patient, f"2020-01-{1 + n % 28:02d}T09:{n % 60:02d}:00Z") for n in range(1005)]
        today = _ors_observation(patient, datetime.now(UTC).isoformat(timespec="seconds"))
        batch = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"resource": o, "request": {"method": "POST", "url": "Observation"}} for o in [*old, today]],
        }
        answer = client.post("", json=batch)
        assert answer.status_code == 200, answer.text[:500]
        assert all(e["response"]["status"].startswith("201") for e in answer.json()["entry"])
    card = _start_card(call(server, signed(server, ehr_key), request_body(ehr, patient, prefetch=True)))
    assert card is None, "today's ORS was cut from the prefetch"


def _ors_observation(patient: str, when: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}
        ],
        "code": {"coding": [{"system": MEASURES, "code": "ors-total", "display": "ORS total"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": 30, "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}"},
    }


def test_a_jwt_without_kid_verifies_with_the_clients_only_key(server, ehr, patient, ehr_key):
    """Issue 17, finding 1, for CDS clients: an EHR whose JWKS holds one key may sign without ``kid``."""
    token = signed(server, ehr_key, header={"alg": "RS384", "typ": "JWT"})
    assert call(server, token, request_body(ehr, patient, prefetch=True)).status_code == 200


def test_a_prefetch_the_service_cannot_read_is_skipped_not_a_failure(server, ehr_key):
    """The EHR's data is not ours to trust: an Observation or Flag without an id, a score without a number, a
    value that is a string; the hook still answers, with cards for what it could read."""
    score = {"system": "http://fit-fhir.org/fhir/CodeSystem/fit-measures", "code": "srs-total"}
    observations = [
        {"resourceType": "Observation", "status": "final", "code": {"coding": [score]}, "valueQuantity": {"value": 30}},
        {
            "resourceType": "Observation",
            "id": "no-value",
            "status": "final",
            "code": {"coding": [score]},
            "valueQuantity": {"unit": "{score}"},
        },
        {
            "resourceType": "Observation",
            "id": "text-value",
            "status": "final",
            "code": {"coding": [score]},
            "valueQuantity": {"value": "thirty"},
            "effectiveDateTime": "2026-12-01",
        },
    ]
    flag = {
        "resourceType": "Flag",
        "status": "active",
        "code": {"text": "no id"},
        "subject": {"reference": "Patient/x"},
    }
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": "untrusted"},
        "prefetch": {
            "observations": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": o} for o in observations],
            },
            "flags": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": flag}]},
        },
    }
    answer = call(server, signed(server, ehr_key), body)
    assert answer.status_code == 200, answer.text
    assert all("no id" not in card["summary"] for card in answer.json()["cards"])
