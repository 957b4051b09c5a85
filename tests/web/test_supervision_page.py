"""The supervision page in Chromium (issue 20, point 4), on both databases: opened from /sandbox as the demo
supervisor in the first minute, charts over months and programs and clinicians side by side, each cell with its
value, 95 % interval and counts; small cells suppressed ("< 3" here, FHIR_SERVER_REPORT_MIN_CLIENTS=3) in the page
and the CSV, which holds exactly what the page shows; axe-clean; inside an 800 px EHR iframe.  The world and the
practice: tests/web/supervision_world.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest

from fhir_server.reporting.intervals import mean_interval, wilson
from fhir_server.smart.sandbox_practice import CLINICIANS
from tests.reporting.practice import Practice
from tests.support.server import RunningServer
from tests.web.conftest import AXE, unavailable
from tests.web.ehr_page import FRAME_WIDTH
from tests.web.supervision_world import (
    MINIMUM,
    PERIOD,
    SECRET_MEAN,
    csv_of,
    launch_url,
    opened,
    practising,
    serving,
    shown_cells,
    sign_in,
    supervisor,
)
from tests.web.test_accessibility import axe_violations
from tests.web.test_layout_and_iframe import keep

SRS_MEAN = "srs-mean-srs-mean"  # the group key of the mean SRS (indicator srs-mean, group srs-mean)
SMALL = f"< {MINIMUM} clients"


@pytest.fixture(scope="module")
def ours(database_url: str, backend: str, ehr_origin: str) -> Iterator[RunningServer]:
    with serving(database_url, backend, ehr_origin) as running:
        yield running


@pytest.fixture(scope="module")
def practice(ours: RunningServer) -> Iterator[Practice]:
    with practising(ours) as built:
        yield built


def test_the_sandbox_opens_the_page_for_its_supervisor(browser, ours, tmp_path, backend):
    """The first minute: /sandbox, the clinician view as the demo clinician, then "Supervision page" asks who signs
    in (another demo user) and shows the practice: every indicator charted, both programs side by side; choosing a
    program puts its two clinicians side by side; the CSV downloads."""
    context = browser.new_context(viewport={"width": 1024, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{ours.root}/sandbox")
        page.locator('button[aria-label="Clinician view for Alex Rivera"]').click()
        sign_in(page, "demo", "sandbox-demo")
        page.wait_for_url(re.compile(r".*/app/clinician$"))
        page.goto(f"{ours.root}/sandbox")
        page.locator('button[value="supervision"]').click()
        sign_in(page, "supervisor", "sandbox-supervisor")
        page.wait_for_url(re.compile(r".*/app/supervision$"))
        groups = page.locator("div.group")
        assert groups.count() == page.locator("svg.months").count() >= 9  # one chart per Measure group
        assert page.locator("svg.months g.point").count() > 20  # the last four months have values
        headers = page.locator("table.programs thead th").all_inner_texts()
        assert headers == ["Indicator", "Adult counselling", "Youth and family"]
        assert "Signed in as Robin Ellis" in page.locator(".lead").inner_text()
        page.locator("#scope").select_option("Organization/sandbox-program-adults")
        page.locator("button.show").click()
        page.wait_for_url(re.compile(r".*scope=Organization%2Fsandbox-program-adults.*"))
        clinicians = page.locator("table.clinicians thead th").all_inner_texts()[1:]
        adults = {f"{c.given} {c.family}" for c in CLINICIANS if c.program == "sandbox-program-adults"}
        assert set(clinicians) == adults
        assert page.locator("table.programs thead th").all_inner_texts()[1:] == ["Adult counselling"]
        with page.expect_download() as download:
            page.locator(".download a").click()
        assert download.value.suggested_filename.endswith(".csv")
        shot = tmp_path / "supervision-sandbox.png"
        page.screenshot(path=str(shot), full_page=True)
        keep(shot, backend)
    finally:
        context.close()


def test_charts_and_side_by_side_cells_with_values_intervals_and_counts(browser, ours, practice):
    name, _ = supervisor(ours, [practice.org])
    with opened(browser, ours, name, {**PERIOD, "scope": practice.org}, ehr_launch=False) as page:
        chart = page.locator(f"#g-{SRS_MEAN} svg.months")
        assert chart.get_attribute("role") == "img"
        february = chart.locator('g.point[data-month="2026-02"]')
        assert february.get_attribute("data-value") == "36"  # (38 + 36 + 34) / 3
        assert february.locator("path.interval").count() == 1
        assert "95 % interval" in february.locator("title").text_content()
        cells = shown_cells(page.content())
        assert cells["overall", SRS_MEAN, ""].startswith("35.4 95 % interval")  # 6 ratings of 5 clients
        assert "6 ratings, 5 clients" in cells["overall", SRS_MEAN, ""]
        low, high = mean_interval(4, 38 + 36 + 34 + 38, 38**2 + 36**2 + 34**2 + 38**2)  # type: ignore[misc]
        adults = cells["program", SRS_MEAN, practice.program_a]
        assert adults == f"36.5 95 % interval {low:.1f} to {high:.1f} 4 ratings, 3 clients"
        low, high = wilson(1, 4)  # a3's 34.0 is below the cutoff (36): a rate of 1 in 4, Wilson's interval
        below = cells["program", "srs-below-cutoff-srs-below-cutoff", practice.program_a]
        assert below == f"25 % 95 % interval {low * 100:.0f} to {high * 100:.0f} % 1 of 4 ratings, 3 clients"
        assert cells["clinician", SRS_MEAN, practice.ca] == adults  # ca saw every client of A
        names = page.locator("table.programs thead th").all_inner_texts()
        assert names == ["Indicator", "Adults", "Family", "Youth"]  # Organization.name from the store, by name
        definition = page.locator("#ind-srs-mean details.definition")
        assert "Mean of the SRS/CSRS totals" in definition.text_content()  # the Measure's words, in the page


def test_small_cells_are_suppressed_in_the_page_and_the_csv(browser, ours, practice):
    name, _ = supervisor(ours, [practice.org])
    query = {**PERIOD, "scope": practice.org}
    with opened(browser, ours, name, query) as page:
        html = page.content()
        cells = shown_cells(html)
        text, rows = csv_of(page, ours, query)
        chart = page.locator(f"#g-{SRS_MEAN} svg.months")
        assert chart.locator('g.suppressed[data-month="2026-03"]').text_content().endswith(f"< {MINIMUM}")
        assert chart.locator('g.point[data-month="2026-03"]').count() == 0
    for small in (("program", practice.program_b), ("clinician", practice.cb), ("month", "2026-03")):
        keys = [k for k in cells if (k[0], k[2]) == small]
        assert any(cells[k] == SMALL for k in keys), small  # "< 3 clients": no value, no interval, no counts
        assert all(cells[k] in (SMALL, "no data") for k in keys), small  # (no data: the indicator counted none)
    assert SECRET_MEAN not in html and SECRET_MEAN not in text  # B's mean SRS, in no cell, chart, title or row
    suppressed = [r for r in rows if r["stratum"] in (practice.program_b, practice.cb, "2026-03")]
    assert suppressed and all(r["clients"] == f"< {MINIMUM}" for r in suppressed)
    for row in suppressed:
        assert [row[c] for c in ("value", "interval_low", "interval_high", "numerator", "n")] == [""] * 5


def test_the_csv_holds_exactly_what_the_page_shows(browser, ours, practice):
    name, _ = supervisor(ours, [practice.org])
    query = {**PERIOD, "scope": practice.org}
    with opened(browser, ours, name, query) as page:
        cells = shown_cells(page.content())
        _, rows = csv_of(page, ours, query)
    in_csv = {(r["breakdown"], f"{r['indicator']}-{r['group']}", r["stratum"]): r for r in rows}
    assert {k for k, v in cells.items() if v != "no data" or k[0] == "overall"} == set(in_csv)
    for key, row in in_csv.items():
        shown = cells[key]
        if row["clients"].startswith("<"):
            assert shown == SMALL, key
            continue
        if row["value"]:
            assert shown.startswith(f"{row['value']} {row['unit']}".strip()), (key, shown)
        if row["interval_low"]:
            interval = f"95 % interval {row['interval_low']} to {row['interval_high']} {row['unit']}".strip()
            assert interval in shown, (key, shown)
        if row["n"]:
            counted = f"{row['numerator']} of {row['n']}" if row["numerator"] else f"{row['n']} {row['counted']}"
            assert counted in shown, (key, shown)
        if row["counted"] not in ("clients", "") and row["clients"] != "0":
            assert f"{row['clients']} client" in shown, (key, shown)
    assert {r["name"] for r in rows if r["breakdown"] == "program"} == {"Adults", "Youth", "Family"}


def test_the_page_is_axe_clean_with_every_section_open(browser, ours, practice):
    """axe-core, as for every page of the app (the context bypasses the CSP only to inject axe)."""
    if not AXE.exists():
        unavailable("axe-core is not installed (npm ci in tests/web; make test does it)")
    name, _ = supervisor(ours, [practice.org])
    with opened(browser, ours, name, {**PERIOD, "scope": practice.org}, bypass_csp=True) as page:
        assert axe_violations(page) == []
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        assert axe_violations(page) == []
        page.goto(f"{page.url.split('?')[0]}?{urlencode({'from': '2026-07', 'to': '2026-01'})}")
        assert "cannot be shown" in page.locator("h1").inner_text()  # a refusal page is a page of the app too
        assert axe_violations(page) == []


def test_inside_an_800_px_ehr_iframe(browser, ours, practice, ehr_origin, backend, tmp_path):
    """The EHR embeds the launch; sign-in and page stay in the frame (partitioned cookies), nothing scrolls
    sideways but the wide tables inside their own region."""
    name, _ = supervisor(ours, [practice.org])
    launch = launch_url(ours, name).removeprefix(ours.root)
    context = browser.new_context(viewport={"width": 1000, "height": 1250})
    try:
        page = context.new_page()
        page.goto(f"{ehr_origin}/embed?app={quote(ours.root)}&path={quote(launch)}")
        frame = page.frame(name="app")
        frame.wait_for_url(re.compile(r".*/auth/login.*"))
        sign_in(frame, name)
        frame.wait_for_url(re.compile(r".*/app/supervision$"))
        frame.locator("select#scope").select_option(practice.org)
        frame.locator("#from").fill("2026-01")
        frame.locator("#to").fill("2026-06")
        frame.locator("button.show").click()
        frame.wait_for_url(re.compile(r".*/app/supervision\?.*"))
        assert frame.locator("table.clinicians").count() == 1
        width = frame.evaluate("document.documentElement.clientWidth")
        assert width <= FRAME_WIDTH and frame.evaluate("document.documentElement.scrollWidth") <= width
        box = frame.locator(f"#g-{SRS_MEAN} svg.months").bounding_box()
        assert box["width"] <= FRAME_WIDTH
        shot = tmp_path / "supervision-ehr-iframe-800.png"
        page.screenshot(path=str(shot), full_page=True)
        keep(shot, backend)
    finally:
        context.close()
