"""No false refusals from strict submission validation (docs/security.md "Bad input"): rich narratives, every valid
reference form, JSON numbers of every FHIR numeric type, and repeating groups (the one place a linkId may repeat
among siblings) still store, and a scored response is still scored."""

from __future__ import annotations

import copy
import uuid

from tests.api.fhir import post
from tests.api.test_bad_submissions import NS, QR, SRS, _issue, patient, srs

GOOD_DIV = (
    f'<div {NS} xml:lang="en"><h3 class="title">SRS</h3><p>Total <b>34.1</b> &amp; &lt;36&gt;&#160;'
    '<a href="https://example.org/srs#about" title="about">about</a> <a href="#p1">client</a></p>'
    '<table border="1"><tbody><tr><th scope="row">Approach</th><td colspan="2" style="color: red">8.0</td></tr>'
    '</tbody></table><!-- a comment --><img src="data:image/png;base64,iVBORw0KGgo=" alt="chart"/>'
    '<ul><li>one</li></ul><span style="font-weight: bold">done</span></div>'
)


def test_valid_narratives_and_references_still_store_and_score(client, uid):
    qr = srs(uid)
    qr["text"] = {"status": "generated", "div": GOOD_DIV}
    qr["contained"] = [{"resourceType": "Patient", "id": "p1", "text": {"status": "generated", "div": GOOD_DIV}}]
    qr["author"] = {"reference": "https://ehr.example.org/fhir/Practitioner/pr-1.a"}
    qr["encounter"] = {"reference": f"Encounter/{uid}/_history/2"}
    qr["source"] = {"reference": "#p1"}
    qr["extension"] = [{"url": "urn:x", "valueCanonical": SRS}, {"url": "urn:y", "valueDecimal": 3.50}]
    stored = post(client, f"/{QR}", qr)
    assert stored.status_code == 201, stored.text
    assert stored.json()["text"]["div"] == GOOD_DIV
    scored = client.get("/Observation", params={"subject": f"Patient/{uid}", "_summary": "count"}).json()
    assert scored["total"] >= 1

    person = patient(uid)
    person["generalPractitioner"] = [
        {"reference": "Practitioner/x"},
        {"reference": "http://ehr.example.org/fhir/Practitioner/1"},
        {"reference": f"urn:uuid:{uuid.uuid4()}"},
        {"reference": "urn:oid:1.2.840.10008"},
        {"reference": "Organization/o-1/_history/3"},
    ]
    person["active"] = True
    person["multipleBirthInteger"] = 2
    assert post(client, "/Patient", person).status_code == 201


def test_a_repeating_group_may_appear_more_than_once(client, uid):
    questionnaire = {
        "resourceType": "Questionnaire",
        "url": f"urn:test:q:{uid}",
        "version": "1",
        "status": "active",
        "item": [{"linkId": "g", "type": "group", "repeats": True, "item": [{"linkId": "a", "type": "integer"}]}],
    }
    assert post(client, "/Questionnaire", questionnaire).status_code == 201
    group = {"linkId": "g", "item": [{"linkId": "a", "answer": [{"valueInteger": 1}]}]}
    response = {"resourceType": QR, "questionnaire": f"urn:test:q:{uid}|1", "status": "completed", "item": [group]}
    assert post(client, f"/{QR}", {**response, "item": [group, copy.deepcopy(group)]}).status_code == 201
    twice = {"linkId": "g", "item": [group["item"][0], copy.deepcopy(group["item"][0])]}
    refused = post(client, f"/{QR}", {**response, "item": [twice]})
    assert refused.status_code == 422
    assert f"{QR}.item[0].item[1]" in _issue(refused.json(), "structure")["expression"]
