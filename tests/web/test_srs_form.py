"""The SRS in a browser (issue 7 point 2; the measures notes: SRS): a visual-analog line per item with nothing on it
until the client marks it, marked by dragging or tapping with a pointer and by keyboard (WAI-ARIA slider: arrows
±1 mm, Page Up/Down ±10, Home/End), required lines blocking the send with a polite message, a draft that survives a
reload, one stored and scored response however often the form is sent, and a thank-you page afterwards."""

from __future__ import annotations

from tests.web.conftest import search
from tests.web.form_driver import (
    SRS,
    SRS_LINES,
    answers_of,
    drag,
    expect_draft_saved,
    keys,
    slider,
    submit_and_wait_for_thanks,
    tap,
    value_now,
    with_total,
)

FLAGS = "http://fit-fhir.org/fhir/CodeSystem/fit-flags"


def test_lines_start_unmarked_and_show_no_numbers(page, open_form, patient):
    open_form(page, patient, "srs")
    for link_id in SRS_LINES:
        control = slider(page, link_id)
        assert control.get_attribute("aria-valuenow") is None
        assert control.get_attribute("aria-valuetext") == "Not marked yet"
        assert (control.get_attribute("aria-valuemin"), control.get_attribute("aria-valuemax")) == ("0", "100")
        label = page.locator(f"#{control.get_attribute('aria-labelledby')}").inner_text()
        assert label.startswith(page.locator(f'[data-link-id="{link_id}"] .item-text').inner_text()[:8])
        assert control.locator(".vas-mark").is_hidden()
        assert control.inner_text().strip() == ""  # no numbers, no ticks: a plain line
    anchors = page.locator(".vas-anchors").first.inner_text()
    assert "Low" in anchors and "High" in anchors  # the Questionnaire's lower/upper display items


def test_srs_marked_by_dragging_is_stored_once_and_scored(page, open_form, patient, fhir):
    open_form(page, patient, "srs", encounter=f"{patient}-visit")
    drag(page, "relationship", 0.2, 0.9)
    tap(page, "goals", 0.5)
    drag(page, "approach", 0.8, 0.3)
    drag(page, "overall", 0.5, 1.3)  # past the end: clamps to 100 mm
    marked = {link_id: value_now(page, link_id) for link_id in SRS_LINES}
    assert abs(marked["relationship"] - 90) <= 1 and abs(marked["goals"] - 50) <= 1
    assert abs(marked["approach"] - 30) <= 1 and marked["overall"] == 100
    assert slider(page, "goals").get_attribute("aria-valuetext") == f"{marked['goals']} out of 100"
    submit_and_wait_for_thanks(page)
    assert "hand the device back" in page.locator("main").inner_text()

    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert answers_of(response) == with_total(marked)
    assert response["questionnaire"] == SRS and response["status"] == "completed"
    assert response["subject"] == response["author"] == response["source"] == {"reference": f"Patient/{patient}"}
    assert response["encounter"] == {"reference": f"Encounter/{patient}-visit"}
    assert response["identifier"]["system"].endswith("/app-submission") and response["authored"].endswith("+00:00")

    [observation] = search(fhir, "Observation", subject=f"Patient/{patient}")
    assert observation["valueQuantity"]["value"] == sum(marked.values()) / 10
    assert observation["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{response['id']}"}]
    codes = {f["code"]["coding"][0]["code"] for f in search(fhir, "Flag", subject=f"Patient/{patient}")}
    assert "srs-below-cutoff" in codes  # total well below 36


def test_srs_marked_by_keyboard_alone(page, open_form, patient, fhir):
    open_form(page, patient, "srs")
    keys(page, "relationship", "End", "ArrowLeft", "ArrowLeft", "ArrowLeft")  # 100 → 97
    page.keyboard.press("Tab")  # the next line is the next stop in the tab order
    assert page.evaluate("document.activeElement.getAttribute('aria-labelledby')").endswith("goals-label")
    for key in ("ArrowRight", "PageUp", "ArrowUp"):  # unmarked: first key marks the middle (50) → 60 → 61
        page.keyboard.press(key)
    keys(page, "approach", "Home", "PageUp", "PageUp", "ArrowDown")  # 0 → 20 → 19
    keys(page, "overall", "End", "PageDown", "ArrowDown", "Home", "End", "PageDown", "ArrowLeft")  # … → 89
    marked = {link_id: value_now(page, link_id) for link_id in SRS_LINES}
    assert marked == {"relationship": 97, "goals": 61, "approach": 19, "overall": 89}
    assert slider(page, "approach").locator(".vas-mark").is_visible()

    page.keyboard.press("Tab")  # from the last line to the send button, and Enter sends
    assert page.evaluate("document.activeElement.className") == "submit"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.locator(".thanks").wait_for()
    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert answers_of(response) == with_total(marked)
    [observation] = search(fhir, "Observation", subject=f"Patient/{patient}")
    assert observation["valueQuantity"]["value"] == 26.6


def test_required_lines_block_sending_with_a_polite_message(page, open_form, patient, fhir):
    open_form(page, patient, "srs")
    keys(page, "relationship", "End")
    keys(page, "overall", "Home")
    posts = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" and r.url.endswith("/app/form") else None)
    page.locator("button.submit").click()
    status = page.locator("#form-status")
    assert status.get_attribute("role") == "status" and status.get_attribute("aria-live") == "polite"
    assert status.inner_text() == "2 questions still need an answer. They are marked above."
    for link_id in ("goals", "approach"):
        item = page.locator(f'[data-link-id="{link_id}"]')
        assert item.locator(".item-error").inner_text() == "Please place a mark on this line."
        assert slider(page, link_id).get_attribute("aria-invalid") == "true"
    assert page.locator('[data-link-id="relationship"] .item-error').is_hidden()
    assert page.evaluate("document.activeElement.getAttribute('aria-labelledby')").endswith("goals-label")
    assert posts == [] and page.url.endswith("/app/form")
    assert search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}") == []

    keys(page, "goals", "PageUp")  # marking a line clears its message
    assert page.locator('[data-link-id="goals"] .item-error').is_hidden()
    assert slider(page, "goals").get_attribute("aria-invalid") is None
    keys(page, "approach", "PageDown")
    assert status.inner_text() == ""
    submit_and_wait_for_thanks(page)
    assert len(search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")) == 1


def test_a_reload_keeps_the_draft(page, open_form, patient, fhir):
    open_form(page, patient, "srs")
    expect_draft_saved(page, lambda: drag(page, "relationship", 0.1, 0.45))
    expect_draft_saved(page, lambda: keys(page, "approach", "End", "PageDown"))
    before = {link_id: value_now(page, link_id) for link_id in SRS_LINES}
    assert before["goals"] is None and before["approach"] == 90
    page.reload()
    after = {link_id: value_now(page, link_id) for link_id in SRS_LINES}
    assert after == before
    assert slider(page, "relationship").locator(".vas-mark").is_visible()
    assert slider(page, "goals").locator(".vas-mark").is_hidden()
    keys(page, "goals", "Home")
    keys(page, "overall", "End")
    submit_and_wait_for_thanks(page)
    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert answers_of(response) == with_total({**before, "goals": 0, "overall": 100})


def test_double_tap_and_replayed_posts_store_one_response(page, open_form, patient, fhir):
    open_form(page, patient, "srs")
    for link_id in SRS_LINES:
        keys(page, link_id, "End")
    sent = []
    page.on(
        "request", lambda r: sent.append(r.post_data) if r.method == "POST" and r.url.endswith("/app/form") else None
    )
    with page.expect_navigation():
        page.locator("button.submit").dblclick()
    page.locator(".thanks").wait_for()
    assert len(sent) == 1  # the page refuses a second send while the first is on its way
    # The same POST again, and several at once, from the page itself (its cookie, its CSRF token).
    statuses = page.evaluate(
        """body => Promise.all([0, 1, 2, 3].map(() => fetch('/app/form', {method: 'POST', body,
             headers: {'Content-Type': 'application/x-www-form-urlencoded'}}).then(r => r.status)))""",
        sent[0],
    )
    assert statuses == [200, 200, 200, 200]  # each followed the 303 to the thank-you page
    page.reload()
    assert page.locator(".thanks").is_visible() and page.locator("#rating-form").count() == 0
    assert len(search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")) == 1
    assert len(search(fhir, "Observation", subject=f"Patient/{patient}")) == 1


def test_parallel_sends_before_any_answer_store_one_response(page, open_form, patient, fhir):
    """The real race: several submissions of one launch in flight at once (docs/security.md: a replayed
    QuestionnaireResponse submission is the conditional-create race; tested with parallel requests)."""
    open_form(page, patient, "srs")

    def complete_draft(response) -> bool:
        request = response.request
        return (
            request.method == "POST"
            and response.url.endswith("/app/form/draft")
            and (request.post_data_json or {}).get("answers") == dict.fromkeys(SRS_LINES, 10)
        )

    # The page saves a draft 250 ms after the last change; one landing after the sends would find the session
    # submitted and reload the page under the evaluate below. Wait for the draft of the finished form first.
    with page.expect_response(complete_draft):
        for link_id in SRS_LINES:
            keys(page, link_id, "Home", "PageUp")
    statuses = page.evaluate(
        """() => { const body = new URLSearchParams(new FormData(document.getElementById('rating-form')));
             return Promise.all([0, 1, 2, 3, 4].map(() => fetch('/app/form', {method: 'POST', body: body.toString(),
               headers: {'Content-Type': 'application/x-www-form-urlencoded'}}).then(r => r.status))); }"""
    )
    assert statuses == [200] * 5
    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert answers_of(response) == with_total(dict.fromkeys(SRS_LINES, 10))
    assert len(search(fhir, "Observation", subject=f"Patient/{patient}")) == 1


def test_on_a_touch_screen_a_swipe_scrolls_and_a_sideways_drag_marks(browser, open_form, patient):
    """A finger that scrolls the page past a line must not leave a mark on it; one that drags along it does."""
    context = browser.new_context(viewport={"width": 360, "height": 640}, has_touch=True, is_mobile=True)
    try:
        page = context.new_page()
        open_form(page, patient, "srs")
        touch = context.new_cdp_session(page)

        def finger(points: list[tuple[float, float]]) -> None:
            x, y = points[0]
            touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
            for x, y in points[1:]:
                touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
            touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

        box = slider(page, "goals").locator(".vas-track").bounding_box()
        x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2
        finger([(x, y - 15 * step) for step in range(11)])  # upwards: the page scrolls
        page.wait_for_function("window.scrollY > 0")
        assert value_now(page, "goals") is None

        slider(page, "approach").scroll_into_view_if_needed()
        box = slider(page, "approach").locator(".vas-track").bounding_box()
        y = box["y"] + box["height"] / 2
        finger([(box["x"] + box["width"] * (0.2 + 0.05 * step), y) for step in range(11)])  # along the line
        assert abs(value_now(page, "approach") - 70) <= 1
    finally:
        context.close()
