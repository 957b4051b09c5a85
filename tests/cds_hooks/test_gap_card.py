"""The CDS card on the last two therapist-client gaps (issue 21, point 4), on both databases: on patient-view, when
the client's two newest current gap Observations are both at or over the site's margin on the total (4 by default,
a site override read as scoring reads it), one information card naming both gaps, curious rather than judging,
pointing at the clinician view; none when one of the two is under it, when there is only one, for a gap entered in
error, or on encounter-start."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhir_server.config import Settings
from fhir_server.store import cds_store
from tests.api.fhir import put
from tests.scoring.test_concordance import therapist
from tests.scoring.test_pipeline import srs, submit
from tests.support.server import RunningServer, ServerThread

ISSUER = "https://ehr.test/gap-cards"
SERVICE = "fit-alliance-patient-view"
PREFETCH = ("Observation?subject=Patient/{p}&category=survey&status=final,amended&_sort=-date&_count=200",
            "Flag?subject=Patient/{p}&status=active&_count=100")  # fmt: skip


@pytest.fixture(scope="module")
def key(server: RunningServer) -> RSAKey:
    key = RSAKey.generate_key(2048, parameters={"kid": "gap-cards", "alg": "RS384", "use": "sig"}, private=True)
    jwks = orjson.dumps({"keys": [key.as_dict(private=False)]}).decode()
    cds_store.add_client(server.app.state.engine, ISSUER, "Test EHR", None, jwks, [])
    return key


@pytest.fixture(scope="module")
def stricter(database_url: str, backend: str) -> Iterator[RunningServer]:
    """A site whose margin on the total is 6 points (the same database, so the same sessions)."""
    settings = Settings(database_url=database_url, scoring_overrides={"gap-total.threshold": 6}, _env_file=None)
    with ServerThread(settings, backend) as running:
        yield running


def _cards(server: RunningServer, key: RSAKey, client: httpx.Client, patient: str, hook: str = "patient-view",
           service: str = SERVICE) -> list[dict]:  # fmt: skip
    observations, flags = (client.get("/" + q.format(p=patient)).json() for q in PREFETCH)
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "ehr", "aud": f"{server.root}/cds-services/{service}", "iat": now,
              "exp": now + 120, "jti": uuid.uuid4().hex}  # fmt: skip
    token = jwt.encode({"alg": "RS384", "kid": key.kid}, claims, key, algorithms=["RS384"])
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": {"patientId": patient,
            "userId": "Practitioner/t"}, "prefetch": {"observations": observations, "flags": flags}}  # fmt: skip
    answer = httpx.post(f"{server.root}/cds-services/{service}", json=body,
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return [c for c in answer.json()["cards"] if c["summary"].startswith("Last two sessions")]


def _session(client: httpx.Client, uid: str, day: int, client_tenths: int, therapist_tenths: int) -> dict:
    """A session on 2026-11-<day> rated by the client and the therapist (every line the same mark)."""
    encounter = {"encounter": {"reference": f"Encounter/{uid}-{day}"}}
    when = f"2026-11-{day:02d}T10:00:00+00:00"
    submit(client, srs(uid, (client_tenths,) * 4, when, **encounter))
    return submit(client, therapist(uid, (therapist_tenths,) * 4, when, **encounter))


def test_two_gaps_at_or_over_the_margin_make_one_curious_card(server, stricter, client, key, uid):
    _session(client, uid, 2, 90, 95)  # +2.0
    assert _cards(server, key, client, uid) == []
    _session(client, uid, 9, 80, 92)  # +4.8: one at the margin, one under it
    assert _cards(server, key, client, uid) == []
    _session(client, uid, 16, 80, 90)  # +4.0: the last two both at or over 4
    [card] = _cards(server, key, client, uid)
    assert card["summary"] == "Last two sessions: the therapist rated them higher than the client did (by 4.0 and 4.8)"
    assert card["detail"].startswith(
        "In the last two sessions that both rated, the therapist's rating of the session was above the client's own: "
        "by 4.0 points on 2026-11-16 and by 4.8 points on 2026-11-09, each at or over this site's margin of 4 points "
        "on the total."
    )
    assert "something to be curious about, not a verdict" in card["detail"]
    assert card["indicator"] == "info" and orjson.loads(card["links"][0]["appContext"]) == {"view": "clinician"}
    assert _cards(server, key, client, uid, "encounter-start", "fit-alliance-encounter-start") == []
    assert _cards(stricter, key, client, uid) == []  # the site's margin is 6: neither reaches it


def test_the_newest_two_current_gaps_count(server, client, key, uid):
    _session(client, uid, 2, 80, 95)  # +6.0
    _session(client, uid, 9, 80, 95)  # +6.0
    assert len(_cards(server, key, client, uid)) == 1
    newest = _session(client, uid, 16, 90, 90)  # +0.0: the last two are no longer both over
    assert _cards(server, key, client, uid) == []
    assert put(client, f"/QuestionnaireResponse/{newest['id']}", {**newest, "status": "entered-in-error"}).is_success
    [card] = _cards(server, key, client, uid)  # its gap is void: the two before it are the last two again
    assert "by 6.0 points on 2026-11-09 and by 6.0 points on 2026-11-02" in card["detail"]
