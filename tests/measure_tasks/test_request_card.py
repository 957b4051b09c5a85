"""The CDS card on patient-view that suggests asking the client for the outcome measure between sessions
(cds_hooks/request_card.py), on both databases: shown when the client has no ORS in the last
FHIR_SERVER_TASK_CARD_DAYS days and no open request for it, as a SMART link to the clinician view (where the
request form is); gone once a request is open, or an ORS is recent; never on encounter-start."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhir_server.canonical import MEASURES_CODESYSTEM
from fhir_server.store import cds_store
from tests.api.fhir import post
from tests.measure_tasks.tasks_data import canonical, sdc_task
from tests.support.server import RunningServer

ISSUER = "https://ehr.test/request-cards"


@pytest.fixture(scope="module")
def key(server: RunningServer) -> RSAKey:
    key = RSAKey.generate_key(2048, parameters={"kid": "request-cards", "alg": "RS384", "use": "sig"}, private=True)
    jwks = orjson.dumps({"keys": [key.as_dict(private=False)]}).decode()
    cds_store.add_client(server.app.state.engine, ISSUER, "Test EHR", None, jwks, [])
    return key


def _ors_total(days_ago: int) -> dict:
    when = (datetime.now(UTC) - timedelta(days=days_ago)).isoformat(timespec="seconds")
    code = {"coding": [{"system": MEASURES_CODESYSTEM, "code": "ors-total"}]}
    return {"resourceType": "Observation", "id": f"ors-{days_ago}", "status": "final", "code": code,
            "effectiveDateTime": when,
            "valueQuantity": {"value": 30}}  # fmt: skip


def _cards(server: RunningServer, key: RSAKey, patient: str, observations: list[dict], hook: str = "patient-view"):
    service = "fit-alliance-patient-view" if hook == "patient-view" else "fit-alliance-encounter-start"
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "ehr", "aud": f"{server.root}/cds-services/{service}", "iat": now,
              "exp": now + 120, "jti": uuid.uuid4().hex}  # fmt: skip
    token = jwt.encode({"alg": "RS384", "kid": key.kid}, claims, key, algorithms=["RS384"])
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": o} for o in observations]}
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": {"patientId": patient},
            "prefetch": {"observations": bundle, "flags": {"resourceType": "Bundle", "type": "searchset"}}}  # fmt: skip
    answer = httpx.post(f"{server.root}/cds-services/{service}", json=body,
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return [c for c in answer.json()["cards"] if "ask the client to fill it in" in c["summary"]]


def test_no_recent_ors_and_no_open_request_gives_a_card_opening_the_request_form(server, client, key, uid):
    (card,) = _cards(server, key, uid, [_ors_total(days_ago=20)])
    assert card["summary"] == "No ORS in the last 14 days: ask the client to fill it in"
    assert card["indicator"] == "info"
    (link,) = card["links"]
    assert link["type"] == "smart" and link["url"].endswith("/app/launch")
    assert orjson.loads(link["appContext"]) == {"view": "clinician"}
    assert (date.today() - timedelta(days=20)).isoformat() in card["detail"]
    assert _cards(server, key, uid, [_ors_total(days_ago=20)])[0]["uuid"] == card["uuid"]  # the same card
    assert len(_cards(server, key, f"{uid}-never", [])) == 1  # never rated: asked too


def test_a_recent_ors_or_an_open_request_means_no_card(server, client, key, uid):
    assert _cards(server, key, uid, [_ors_total(days_ago=3)]) == []
    created = post(client, "/Task", sdc_task(uid, canonical(server, "ors")))
    assert created.status_code == 201, created.text
    assert _cards(server, key, uid, [_ors_total(days_ago=30)]) == []
    srs_only = f"{uid}-srs"
    assert post(client, "/Task", sdc_task(srs_only, canonical(server, "srs"))).status_code == 201
    assert len(_cards(server, key, srs_only, [])) == 1  # a request for another measure does not count


def test_not_on_encounter_start(server, key, uid):
    assert _cards(server, key, uid, [], hook="encounter-start") == []
