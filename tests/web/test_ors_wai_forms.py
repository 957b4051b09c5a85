"""The other measures, rendered from their own Questionnaires (the measures notes: ORS, WAI-SR): the ORS asks who is
filling it in and, for another person, their relationship (an ``enableWhen`` item that appears only then, recorded
in the response and as its source, and scored as its own series); the WAI-SR's twelve Likert items are radio groups
in fieldsets with legends, answerable by keyboard, required before sending, scored into Task/Bond/Goal."""

from __future__ import annotations

import json
from pathlib import Path

from tests.web.conftest import search
from tests.web.form_driver import answers_of, keys, submit_and_wait_for_thanks

ROOT = Path(__file__).parents[2]
ORS_LINES = ("individually", "interpersonally", "socially", "overall")
WAI = json.loads((ROOT / "questionnaires" / "wai-sr" / "questionnaire.json").read_text())
WAI_ITEMS = [i for i in WAI["item"] if i["type"] == "choice"]


def relationship(page):
    return page.locator('[data-link-id="respondent-relationship"]')


def test_ors_by_another_person_records_the_relationship(page, open_form, patient, fhir):
    open_form(page, patient, "ors")
    assert relationship(page).is_hidden()
    page.get_by_label("Other", exact=True).check()
    assert relationship(page).is_visible()  # enableWhen respondent = other
    relationship(page).get_by_role("textbox").fill("Mother")
    for link_id, presses in zip(
        ORS_LINES, (("End",), ("Home", "PageUp"), ("PageUp",), ("End", "PageDown")), strict=True
    ):
        keys(page, link_id, *presses)
    submit_and_wait_for_thanks(page)

    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    answers = answers_of(response)
    assert answers["respondent"]["code"] == "other" and answers["respondent"]["system"].endswith("/fit-respondent")
    assert answers["respondent-relationship"] == "Mother"
    assert [answers[k] for k in ORS_LINES] == [100, 10, 50, 90]
    assert answers["total"] == 25.0  # the calculated total, in the response the EHR gets
    assert response["source"] == response["author"] == {"type": "RelatedPerson", "display": "Mother"}
    assert response["subject"] == {"reference": f"Patient/{patient}"}
    [observation] = search(fhir, "Observation", subject=f"Patient/{patient}")
    assert observation["valueQuantity"]["value"] == 25.0
    series = next(c["valueString"] for c in observation["component"] if "valueString" in c)
    assert series == "other:mother"  # another person's ratings form their own series


def test_ors_switched_back_to_self_drops_the_relationship(page, open_form, patient, fhir):
    open_form(page, patient, "ors")
    page.get_by_label("Other", exact=True).check()
    relationship(page).get_by_role("textbox").fill("Partner")
    page.get_by_label("Self", exact=True).check()
    assert relationship(page).is_hidden()
    for link_id in ORS_LINES:
        keys(page, link_id, "End")
    submit_and_wait_for_thanks(page)
    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert "respondent-relationship" not in answers_of(response)
    assert response["source"] == {"reference": f"Patient/{patient}"}


def test_ors_another_person_must_say_who_they_are(page, open_form, patient, fhir):
    open_form(page, patient, "ors")
    page.get_by_label("Other", exact=True).check()
    for link_id in ORS_LINES:
        keys(page, link_id, "Home")
    page.locator("button.submit").click()
    assert relationship(page).locator(".item-error").inner_text() == "Please fill this in."
    assert page.evaluate("document.activeElement.name") == "answer.respondent-relationship"
    assert search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}") == []


def test_wai_sr_items_are_radio_groups_with_legends(page, open_form, patient):
    open_form(page, patient, "wai-sr")
    groups = page.locator("fieldset.item-choice")
    assert groups.count() == len(WAI_ITEMS) == 12
    for index, item in enumerate(WAI_ITEMS):
        group = groups.nth(index)
        assert item["text"] in group.locator("legend").inner_text()  # the Questionnaire's own text
        labels = [o["valueCoding"]["display"] for o in item["answerOption"]]
        radios = group.get_by_role("radio")
        assert radios.count() == 5
        assert [group.locator("label.option").nth(i).inner_text().strip() for i in range(5)] == labels
        assert page.get_by_role("group", name=item["text"]).count() == 1  # fieldset named by its legend


def test_wai_sr_answered_by_keyboard_and_pointer_is_scored(page, open_form, patient, fhir):
    open_form(page, patient, "wai-sr")
    groups = page.locator("fieldset.item-choice")
    chosen = {}
    for index, item in enumerate(WAI_ITEMS):
        group = groups.nth(index)
        if index % 2 == 0:  # keyboard: focus the group's first radio, move with the arrow keys (selects)
            group.get_by_role("radio").first.focus()
            page.keyboard.press("Space")
            for _ in range(index % 5):
                page.keyboard.press("ArrowRight")
        else:  # pointer: the whole option box is the target
            group.locator("label.option").nth(index % 5).click()
        chosen[item["linkId"]] = str(index % 5 + 1)
        assert group.get_by_role("radio").nth(index % 5).is_checked()
    submit_and_wait_for_thanks(page)

    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    answers = answers_of(response)
    assert {k: answers[k]["code"] for k in chosen} == chosen
    # The calculated scores ride along in the response (the form adds them), so the EHR sees them too.
    ordinals = {link_id: int(code) for link_id, code in chosen.items()}
    assert answers["total"] == sum(ordinals.values())
    assert answers["task-sum"] == sum(ordinals[f"wai-sr-{n}"] for n in (1, 2, 10, 12))
    assert set(answers) == set(chosen) | {i["linkId"] for i in WAI["item"] if i.get("readOnly")}
    observations = search(fhir, "Observation", subject=f"Patient/{patient}")
    values = {o["code"]["coding"][0]["code"]: o["valueQuantity"]["value"] for o in observations}
    ordinal = {link_id: int(code) for link_id, code in chosen.items()}
    task = sum(ordinal[f"wai-sr-{n}"] for n in (1, 2, 10, 12))
    assert any(v == task for k, v in values.items() if "task" in k), values
    total = next(v for k, v in values.items() if k.endswith("total"))
    assert total == sum(ordinal.values())


def test_wai_sr_unanswered_items_block_sending(page, open_form, patient, fhir):
    open_form(page, patient, "wai-sr")
    groups = page.locator("fieldset.item-choice")
    for index in range(12):
        if index not in (4, 9):
            groups.nth(index).locator("label.option").nth(2).click()
    page.locator("button.submit").click()
    assert page.locator("#form-status").inner_text() == "2 questions still need an answer. They are marked above."
    assert groups.nth(4).locator(".item-error").inner_text() == "Please choose one answer."
    assert groups.nth(9).locator(".item-error").is_visible() and groups.nth(3).locator(".item-error").is_hidden()
    assert page.evaluate("document.activeElement.name") == "answer.wai-sr-5"
    assert search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}") == []
