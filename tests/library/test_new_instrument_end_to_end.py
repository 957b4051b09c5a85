"""A new measure is a folder, with no Python (issue 18 point 4: instrument facts from the data only).

A made-up 3-item alliance measure, "Session Check (SC)", is written to a temporary folder at run time and loaded
through the library folders setting (``FHIR_SERVER_LIBRARY_DIRS``) next to the shipped ones.  Over real HTTP, with
nothing but that folder, it appears:

- in the app's "Choose the measure" page for an adult (after the shipped three, which keep their wording), not
  for a child (its ages say 18+: a child is offered the children's forms), and choosing it opens its form;
- in the clinician view after a scored response: its series on the by-session trend (named by its abbreviation,
  with its own cutoff), its latest items, its row in every score, its Flag with the follow-up question;
- in the CDS Hooks cards: its Flag's card, naming its lowest item (it is an alliance measure).

Its ``administered`` (when it is given: what puts it in the chooser) is checked when the library loads.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhir_server.config import PROJECT_ROOT, Settings
from fhir_server.scoring.rules import RulesError, load_rules
from fhir_server.smart.sandbox import DEMO_PASSWORD, DEMO_USER
from fhir_server.store import cds_store
from tests.support.server import RunningServer, ServerThread
from tests.support.tokens import client_for, mint

URL = "http://example.org/fhir/Questionnaire/session-check"
ITEMS = (("heard", "Heard"), ("focus", "Focus"), ("fit", "Fit"))
CDS_ISSUER = "https://ehr.test/new-instrument"
SERVICE = "fit-alliance-patient-view"
EXTENSION = "http://hl7.org/fhir/StructureDefinition"


def _control(code: str) -> dict:
    coding = {"system": "http://hl7.org/fhir/questionnaire-item-control", "code": code}
    return {"url": f"{EXTENSION}/questionnaire-itemControl", "valueCodeableConcept": {"coding": [coding]}}


def _line(link_id: str, label: str) -> dict:
    """A 0-10 slider with its anchors, as the shipped visual-analog lines are made."""
    return {
        "linkId": link_id,
        "type": "integer",
        "text": label,
        "required": True,
        "extension": [
            _control("slider"),
            {"url": f"{EXTENSION}/minValue", "valueInteger": 0},
            {"url": f"{EXTENSION}/maxValue", "valueInteger": 10},
        ],
        "item": [
            {"linkId": f"{link_id}-lower", "type": "display", "text": "Not at all", "extension": [_control("lower")]},
            {"linkId": f"{link_id}-upper", "type": "display", "text": "Completely", "extension": [_control("upper")]},
        ],
    }


QUESTIONNAIRE = {
    "resourceType": "Questionnaire",
    "id": "session-check",
    "url": URL,
    "version": "0.1.0",
    "status": "active",
    "title": "Session Check (SC)",
    "subjectType": ["Patient"],
    "item": [
        *(_line(link_id, label) for link_id, label in ITEMS),
        {"linkId": "total", "type": "decimal", "text": "Total (0-30)", "readOnly": True},
    ],
}
SCORING = {
    "instrument": "session-check",
    "questionnaire": URL,
    "domain": "alliance",
    "ages": {"min": 18, "instead": "the SRS is for ages 13 and over"},
    "administered": {"when": "end"},
    "itemScores": [
        {
            "linkId": link_id,
            "code": f"session-check-{link_id}",
            "display": f"Session Check {label}",
            "label": label,
            "askAbout": f"how much today's session had {label.lower()}",
            "read": "integer",
        }
        for link_id, label in ITEMS
    ],
    "scores": [
        {
            "id": "total",
            "linkId": "total",
            "code": "session-check-total",
            "display": "Session Check total score",
            "method": "sum",
            "items": [link_id for link_id, _ in ITEMS],
            "decimals": 0,
            "min": 0,
            "max": 30,
        }
    ],
    "settings": {
        "session-check-cutoff": {
            "threshold": 24,
            "comparator": "<",
            "confidence": "?",
            "source": "Made up for this test.",
        }
    },
    "flags": [
        {
            "id": "below-cutoff",
            "code": "session-check-below-cutoff",
            "display": "Session Check below cutoff",
            "kind": "threshold",
            "scores": ["total"],
            "severity": "high",
            "setting": "session-check-cutoff",
            "message": 'Session Check {value} today, {condition}. Ask: "What would have made today fit you better?"',
        }
    ],
    "interpretations": [{"kind": "cutoff", "score": "total", "setting": "session-check-cutoff"}],
}


@pytest.fixture(scope="module")
def ours(database_url: str, backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    measures = tmp_path_factory.mktemp("measures")
    (measures / "session-check").mkdir()
    (measures / "session-check" / "questionnaire.json").write_text(json.dumps(QUESTIONNAIRE, indent=2))
    (measures / "session-check" / "scoring.json").write_text(json.dumps(SCORING, indent=2))
    folders = [PROJECT_ROOT / "terminology", PROJECT_ROOT / "questionnaires", measures]
    settings = Settings(database_url=database_url, auth_required=True, sandbox=True,
                        library_dirs=os.pathsep.join(map(str, folders)), _env_file=None)  # fmt: skip
    with ServerThread(settings, backend) as running:
        running.app.state.sandbox.ensure(running.root)  # this server plays the EHR: app client, demo clinician
        yield running


def _patient(ours: RunningServer, birth_date: str) -> str:
    patient = f"sc-{uuid.uuid4().hex[:10]}"
    body = {"resourceType": "Patient", "id": patient, "birthDate": birth_date, "name": [{"text": "Kim Test"}]}
    with client_for(ours, mint(ours, "system/*.cruds")) as c:
        assert c.put(f"/Patient/{patient}", json=body).status_code == 201
    return patient


class Browserless:
    """An EHR launch of the app over plain HTTP: follows redirects by hand and keeps the cookies (the app's is a
    ``__Host-`` cookie, which a cookie jar would keep for https only), signing in as the sandbox's clinician."""

    def __init__(self, ours: RunningServer) -> None:
        self.http = httpx.Client(base_url=ours.root, follow_redirects=False, timeout=30)
        self.cookies: dict[str, str] = {}

    def __enter__(self) -> Browserless:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        answer = self.http.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
        for cookie in answer.headers.get_list("set-cookie"):
            name, _, value = cookie.split(";")[0].partition("=")
            self.cookies[name.strip()] = value
        if answer.status_code in (302, 303):
            return self.request("GET", answer.headers["location"])
        if 'action="/auth/login"' in answer.text and 'name="username"' in answer.text:
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', answer.text).group(1)
            fields = {"csrf_token": csrf, "username": DEMO_USER, "password": DEMO_PASSWORD, "action": "login"}
            return self.request("POST", "/auth/login", data=fields)
        return answer

    def launch(self, ours: RunningServer, patient: str, **params: str) -> httpx.Response:
        token = mint(ours, "system/*.cruds")
        body = {"patient": patient, "user": DEMO_USER, "need_patient_banner": True}
        made = httpx.post(f"{ours.root}/auth/launch", json=body, headers={"Authorization": f"Bearer {token}"})
        assert made.status_code in (200, 201), made.text
        query = httpx.QueryParams({"iss": ours.fhir_base, "launch": made.json()["launch"], **params})
        return self.request("GET", f"/app/launch?{query}")


def _choices(page: httpx.Response) -> list[tuple[str, str]]:
    return re.findall(r'name="measure" value="([^"]+)" required>\s*<span>([^<]+)</span>', page.text)


def test_the_chooser_offers_the_new_measure_by_age(ours: RunningServer):
    with Browserless(ours) as adult:
        page = adult.launch(ours, _patient(ours, "1980-06-01"))
        assert page.url.path == "/app/choose", page.text
        assert [(m, text.strip()) for m, text in _choices(page)] == [
            ("ors", "Outcome Rating Scale (ORS), at the start of the session"),
            ("srs", "Session Rating Scale (SRS), at the end of the session"),
            ("session-check", "Session Check (SC), at the end of the session"),
            ("wai-sr", "Working Alliance Inventory (WAI-SR), every few sessions"),
        ]
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        form = adult.request("POST", "/app/choose", data={"csrf_token": csrf, "measure": "session-check"})
        assert form.url.path == "/app/form" and form.status_code == 200
        assert "<h1>Session Check (SC)</h1>" in form.text and 'name="answer.heard"' in form.text
    with Browserless(ours) as child:
        page = child.launch(ours, _patient(ours, f"{date.today().year - 9}-01-01"))
        assert [m for m, _ in _choices(page)] == ["cors", "csrs"]


@pytest.fixture(scope="module")
def scored(ours: RunningServer) -> str:
    """An adult's Session Check, scored on arrival: 5 + 9 + 6 = 20, below the made-up cutoff of 24."""
    patient = _patient(ours, "1975-03-03")
    marks = {"heard": 5, "focus": 9, "fit": 6}
    response = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{URL}|0.1.0",
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": f"{date.today().isoformat()}T10:00:00Z",
        "item": [{"linkId": link_id, "answer": [{"valueInteger": mark}]} for link_id, mark in marks.items()],
    }
    with client_for(ours, mint(ours, "system/*.cruds")) as c:
        created = c.post("/QuestionnaireResponse", json=response)
        assert created.status_code == 201, created.text
        flags = c.get("/Flag", params={"subject": f"Patient/{patient}", "status": "active"}).json()
    assert [e["resource"]["code"]["coding"][0]["code"] for e in flags["entry"]] == ["session-check-below-cutoff"]
    return patient


def test_the_clinician_view_shows_its_series_and_flag(ours: RunningServer, scored: str):
    with Browserless(ours) as app:
        page = app.launch(ours, scored, view="clinician")
    assert page.url.path == "/app/clinician" and page.status_code == 200, page.text
    html = page.text
    assert '<h2 id="trend-heading">SC and ORS by session</h2>' in html
    series = re.search(r'<g class="series series-sc">(.*?)</g></g>', html, re.S)
    assert series and 'data-value="20"' in series.group(1) and 'data-flagged="true"' in series.group(1)
    assert '<g class="sc-cutoff">' in html and "SC cutoff 24" in html
    assert "Latest SC items" in html
    for _, label in ITEMS:
        assert f'<th scope="row">Session Check {label}</th>' in html
    assert re.search(r"<td>Session Check total score</td>\s*<td>20</td>", html)
    flag = re.search(r'<article id="flag-[^"]+" class="flag flag-ph".*?</article>', html, re.S)
    assert flag and "Session Check below cutoff" in flag.group(0)
    assert "Session Check 20 today, below 24." in flag.group(0) and "fit you better" in flag.group(0)


def _signed(ours: RunningServer, key: RSAKey) -> str:
    now = int(time.time())
    claims = {"iss": CDS_ISSUER, "sub": "ehr", "aud": f"{ours.root}/cds-services/{SERVICE}", "iat": now,
              "exp": now + 120, "jti": uuid.uuid4().hex}  # fmt: skip
    return jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])


def test_the_cds_card_names_its_flag_and_lowest_item(ours: RunningServer, scored: str):
    key = RSAKey.generate_key(2048, parameters={"kid": "sc-cds", "alg": "RS384"}, private=True)
    jwks = orjson.dumps({"keys": [key.as_dict(private=False)]}).decode()
    cds_store.add_client(ours.app.state.engine, CDS_ISSUER, "EHR", None, jwks, [ours.fhir_base])
    templates = next(
        s["prefetch"] for s in httpx.get(f"{ours.root}/cds-services").json()["services"] if s["id"] == SERVICE
    )
    with client_for(ours, mint(ours, "system/*.rs")) as c:  # what the EHR runs for its prefetch
        prefetch = {k: c.get("/" + q.replace("{{context.patientId}}", scored)).json() for k, q in templates.items()}
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": scored, "userId": "Practitioner/sandbox-therapist"},
        "prefetch": prefetch,
    }
    answer = httpx.post(f"{ours.root}/cds-services/{SERVICE}", json=body,
                        headers={"Authorization": f"Bearer {_signed(ours, key)}"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    cards = [c for c in answer.json()["cards"] if c["indicator"] == "warning"]
    assert len(cards) == 1, answer.text
    card = cards[0]
    assert card["summary"] == "Session Check 20 last session, below 24; Session Check Heard lowest"
    assert "| Session Check Heard | 5 |" in card["detail"]
    assert orjson.loads(card["links"][0]["appContext"])["view"] == "clinician"


@pytest.mark.parametrize(
    ("administered", "problem"),
    [({"when": "weekly"}, "administered.when"), ({"when": "end", "title": " "}, "administered.title"),
     ({"when": "end", "order": 1}, "administered.order")],
)  # fmt: skip
def test_administered_is_checked_when_the_library_loads(tmp_path: Path, administered: dict, problem: str):
    path = tmp_path / "scoring.json"
    path.write_text(json.dumps({**SCORING, "administered": administered}))
    with pytest.raises(RulesError, match=re.escape(problem)):
        load_rules(path)
