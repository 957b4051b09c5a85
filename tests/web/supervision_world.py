"""The supervision page's test world: this server with authorization on, the sandbox (whose EHR registration and app
client the launches use), small cells suppressed below three clients (``MINIMUM``) so that suppression bites on a
practice of four, and the page opened the way a supervisor opens it: a SMART launch with ``view=supervision``
(EHR launch, or standalone) and a sign-in at this server's authorization server, in Debian's Chromium.

The practice (tests/reporting/practice.py; period January to June 2026) — SRS totals in brackets:

- program A (clinician ca): a1 2026-02-02 (38.0) and 2026-03-02 (38.0), a2 02-03 (36.0), a3 02-04 (34.0);
- program B (clinician cb): b1 2026-03-03 (31.2), B's only client: every cell of B, of cb and of March (a1 and b1)
  counts fewer than three clients and is suppressed, so 31.2 — B's mean SRS — is nowhere on the page;
- program C (clinician cc): c1 2026-04-06 (35.2), small too: with two small cells in each breakdown, none of A's
  has to be suppressed with them (a lone small cell takes its smallest sibling along: supervision/cells.py).
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import lxml.html

from fhir_server.auth import admin as accounts
from fhir_server.auth.launch_contexts import create_launch
from fhir_server.config import Settings
from tests.reporting.practice import Practice
from tests.support.server import RunningServer, ServerThread
from tests.support.tokens import client_for, mint

MINIMUM = 3
PERIOD = {"from": "2026-01", "to": "2026-06"}
PASSWORD = "a-long-password"
SECRET_MEAN = "31.2"  # B's mean SRS: a suppressed cell's value


@contextmanager
def serving(database_url: str, backend: str, ehr_origin: str) -> Iterator[RunningServer]:
    """The server of a test module (its ``ours`` fixture)."""
    # cookie_secure: the sign-in cookie is SameSite=None; Partitioned, so the launch signs in inside an EHR's iframe
    settings = Settings(database_url=database_url, auth_required=True, sandbox=True, report_min_clients=MINIMUM,
                        frame_ancestors=[ehr_origin], cookie_secure=True, _env_file=None)  # fmt: skip
    with ServerThread(settings, backend) as running:
        running.app.state.sandbox.ensure(running.root)
        yield running


@contextmanager
def practising(ours: RunningServer) -> Iterator[Practice]:
    """The practice above, new (its own organisation and programs) for each test module (its ``practice``)."""
    with client_for(ours, mint(ours, "system/*.cruds")) as client:
        p = Practice(client, uuid.uuid4().hex[:12])
        a1, a2, a3, b1 = (p.patient(k, "1980-01-01") for k in ("a1", "a2", "a3", "b1"))
        p.session(a1, "2026-02-02", p.ca, p.program_a, ors=50, srs=(95,) * 4)
        p.session(a2, "2026-02-03", p.ca, p.program_a, ors=50, srs=(90,) * 4)
        p.session(a3, "2026-02-04", p.ca, p.program_a, ors=50, srs=(85,) * 4)
        p.session(a1, "2026-03-02", p.ca, p.program_a, ors=60, srs=(95,) * 4)
        p.session(b1, "2026-03-03", p.cb, p.program_b, ors=40, srs=(78,) * 4)
        program_c, cc = f"Organization/{p.uid}-c", f"Practitioner/{p.uid}-cc"
        p._put(program_c, {"name": "Family", "partOf": {"reference": p.org}})
        p._put(cc, {"name": [{"text": "cc"}]})
        p.session(p.patient("c1", "1980-01-01"), "2026-04-06", cc, program_c, ors=50, srs=(88,) * 4)
        yield p


def supervisor(ours: RunningServer, organizations: list[str]) -> tuple[str, str]:
    """A new user of this server who supervises ``organizations``: (username, user id)."""
    name = f"sup-{uuid.uuid4().hex[:8]}"
    user_id = accounts.add_user(
        ours.app.state.engine, name, PASSWORD, f"Practitioner/{name}", may_pick_patient=False,
        supervises=organizations,
    )  # fmt: skip
    return name, user_id


def launch_url(ours: RunningServer, username: str, *, ehr_launch: bool = True) -> str:
    """An EHR launch for ``username`` (the context an EHR would create), or a standalone launch."""
    params = {"iss": ours.fhir_base, "view": "supervision"}
    if ehr_launch:
        state = ours.app.state
        params["launch"] = create_launch(state.oauth, state.patients, {"user": username}, "test EHR")["launch"]
    return f"{ours.root}/app/launch?{urlencode(params)}"


def sign_in(where, username: str, password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    where.locator("#username").fill(username)
    where.locator("#password").fill(password)
    where.locator('button[value="login"]').click()


@contextmanager
def opened(browser, ours: RunningServer, username: str, query: dict[str, str] | None = None, *,
           ehr_launch: bool = True, bypass_csp: bool = False, width: int = 1024) -> Iterator[object]:  # fmt: skip
    """A page signed in as ``username`` after a launch, showing ``/app/supervision?query``."""
    context = browser.new_context(viewport={"width": width, "height": 900}, bypass_csp=bypass_csp)
    try:
        page = context.new_page()
        page.goto(launch_url(ours, username, ehr_launch=ehr_launch))
        sign_in(page, username)
        page.wait_for_url(re.compile(r".*/app/supervision$"))
        if query is not None:
            page.goto(f"{ours.root}/app/supervision?{urlencode(query)}")
        yield page
    finally:
        context.close()


def csv_of(page, ours: RunningServer, query: dict[str, str]) -> tuple[str, list[dict[str, str]]]:  # type: ignore[no-untyped-def]
    """The CSV download with the page's own session: its text and rows."""
    answer = page.request.get(f"{ours.root}/app/supervision.csv?{urlencode(query)}")
    assert answer.status == 200, answer.text()[:300]
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"].startswith("attachment; filename=")
    text = answer.text()
    return text, list(csv.DictReader(io.StringIO(text)))


def shown_cells(html: str) -> dict[tuple[str, str, str], str]:
    """Every cell of the page: (breakdown, group key, stratum) → its text, as one line."""
    found = {}
    for element in lxml.html.fromstring(html).xpath("//*[@data-group]"):
        tables = element.xpath("ancestor::table/@class")
        classes = tables[0].split() if tables else []
        breakdown = next((b for b in ("program", "clinician") if f"{b}s" in classes), None)
        breakdown = breakdown or ("month" if "months-table" in classes else "overall")
        found[breakdown, element.get("data-group"), element.get("data-stratum")] = " ".join(
            element.text_content().split()
        )
    return found
