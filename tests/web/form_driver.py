"""What a person does with the rating form, as Playwright steps: drag or tap a line, use the keyboard, read back
what the page says.  ``where`` is a Page or a Frame (the form inside the EHR's iframe)."""

from __future__ import annotations

from typing import Any

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
SRS_LINES = ("relationship", "goals", "approach", "overall")


def slider(where: Any, link_id: str) -> Any:
    return where.locator(f'[data-link-id="{link_id}"] [role="slider"]')


def value_now(where: Any, link_id: str) -> int | None:
    value = slider(where, link_id).get_attribute("aria-valuenow")
    return None if value is None else int(value)


def _track_point(where: Any, link_id: str, ratio: float) -> tuple[float, float]:
    box = slider(where, link_id).locator(".vas-track").bounding_box()
    assert box is not None, f"the line of {link_id} is on screen"
    return box["x"] + ratio * box["width"], box["y"] + box["height"] / 2


def drag(page: Any, link_id: str, start: float, end: float, where: Any = None) -> None:
    """Press on the line at ``start`` (0..1 of its length), drag to ``end`` and let go (mouse pointer)."""
    where = where or page
    slider(where, link_id).scroll_into_view_if_needed()
    x0, y = _track_point(where, link_id, start)
    x1, _ = _track_point(where, link_id, end)
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y, steps=8)
    page.mouse.up()


def tap(page: Any, link_id: str, at: float, where: Any = None) -> None:
    where = where or page
    slider(where, link_id).scroll_into_view_if_needed()
    x, y = _track_point(where, link_id, at)
    page.mouse.click(x, y)


def keys(where: Any, link_id: str, *presses: str) -> None:
    control = slider(where, link_id)
    control.focus()
    for key in presses:
        control.press(key)


def expect_draft_saved(page: Any, action: Any) -> None:
    """Run ``action`` and wait until the draft it causes has been stored (204)."""
    with page.expect_response(lambda r: r.url.endswith("/app/form/draft") and r.request.method == "POST") as saved:
        action()
    assert saved.value.status == 204, saved.value.text()


def submit_and_wait_for_thanks(page: Any, where: Any = None) -> None:
    where = where or page
    with page.expect_response(lambda r: r.url.endswith("/app/form") and r.request.method == "POST") as posted:
        where.locator("button.submit").click()
    assert posted.value.status == 303
    where.locator(".thanks").wait_for()


def with_total(marks: dict[str, int]) -> dict[str, Any]:
    """The answers an SRS or ORS response carries: the marks (mm) and the calculated total (cm), as the
    Questionnaire's calculatedExpression gives it (the form adds it; the client never sees it)."""
    return {**marks, "total": sum(marks.values()) / 10}


def answers_of(response: dict) -> dict[str, Any]:
    out = {}
    for item in response.get("item", []):
        answer = item["answer"][0]
        out[item["linkId"]] = next(v for k, v in answer.items() if k.startswith("value"))
    return out
