"""FHIR R4 §3.1.1 compartment search (``GET [base]/Patient/[id]/[type]``, the R4 Patient CompartmentDefinition)
and the Patient ``$everything`` operation (R4 OperationDefinition Patient-everything: _since, _type, _count, paged
with next links)."""

from __future__ import annotations

import time

import pytest

from tests.search.helpers import all_ids, create, entries, follow, ids, link, observation, ref, search

QR = "QuestionnaireResponse"


@pytest.fixture(scope="module")
def households(shared_client, shared_uid):
    """Ann and Bob, each with Observations, a Flag, an Encounter and a QuestionnaireResponse.  One Observation is
    about Bob but performed by Ann, so it belongs to both compartments (Observation: subject, performer)."""
    client, s = shared_client, f"urn:codes:{shared_uid}:cmp"
    w = {"s": s, "ann": create(client, {"resourceType": "Patient"}), "bob": create(client, {"resourceType": "Patient"})}
    ann, bob = ref("Patient", w["ann"]), ref("Patient", w["bob"])
    form = f"http://example.org/{shared_uid}/Questionnaire/empty"  # a response is checked against its form
    create(client, {"resourceType": "Questionnaire", "status": "active", "url": form})
    for key, code, fields in (("ann_a", "a", {"subject": ann}), ("ann_b", "b", {"subject": ann})):
        w[key] = create(client, observation(s, code, **fields))
        time.sleep(0.002)  # lastUpdated has millisecond precision: keep the creation order unambiguous
    w["shared"] = create(client, observation(s, "a", subject=bob, performer=[ann]))
    w["bob_a"] = create(client, observation(s, "a", subject=bob))
    for who, subject in (("ann", ann), ("bob", bob)):
        w[f"{who}_flag"] = create(
            client, {"resourceType": "Flag", "status": "active", "code": {"text": "alliance"}, "subject": subject}
        )
        w[f"{who}_enc"] = create(
            client,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": subject,
            },
        )
        w[f"{who}_qr"] = create(
            client, {"resourceType": QR, "status": "completed", "questionnaire": form, "subject": subject}
        )
    return w


# -- compartment search ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("owner", "member", "params", "expected"),
    [
        ("ann", "Observation", {}, {"ann_a", "ann_b", "shared"}),
        ("bob", "Observation", {}, {"shared", "bob_a"}),
        ("ann", "Observation", {"code": "{s}|a"}, {"ann_a", "shared"}),
        ("bob", "Observation", {"code": "{s}|b"}, set()),
        ("ann", "Observation", {"performer": "Patient/{ann}"}, {"shared"}),
        ("ann", "Flag", {}, {"ann_flag"}),
        ("bob", "Flag", {}, {"bob_flag"}),
        ("ann", "Encounter", {}, {"ann_enc"}),
        ("ann", QR, {}, {"ann_qr"}),
        ("bob", QR, {"status": "completed"}, {"bob_qr"}),
    ],
)
def test_compartment_search_returns_only_the_owners_resources(
    shared_client, households, owner, member, params, expected
):
    w = households
    params = {k: v.format(**w) for k, v in params.items()}
    bundle = search(shared_client, f"/Patient/{w[owner]}/{member}", params)
    assert set(ids(bundle)) == {w[name] for name in expected}


def test_compartment_search_pages_within_the_compartment(shared_client, households):
    w = households
    first = search(shared_client, f"/Patient/{w['ann']}/Observation", {"_count": "1", "_sort": "_lastUpdated"})
    assert f"/Patient/{w['ann']}/Observation?" in link(first, "next")
    pages = follow(shared_client, first)
    assert [i for p in pages for i in ids(p)] == [w["ann_a"], w["ann_b"], w["shared"]]


def test_compartment_of_a_patient_without_resources_is_empty(shared_client):
    assert ids(search(shared_client, "/Patient/nobody-here/Observation")) == []


@pytest.mark.parametrize(
    "path",
    [
        "/Patient/{ann}/Questionnaire",  # a real type, but not in the Patient compartment
        "/Patient/{ann}/Nonsense",
        "/Observation/{ann_a}/Patient",  # no Observation compartment
        "/Encounter/{ann_enc}/Observation",  # the Encounter compartment is not supported
    ],
)
def test_unknown_compartments_are_not_found(shared_client, households, path):
    response = shared_client.get(path.format(**households))
    assert response.status_code == 404, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


# -- Patient $everything ---------------------------------------------------------------------------------------
def _everything(client, patient, **params):
    return search(client, f"/Patient/{patient}/$everything", params)


def test_everything_returns_the_patient_and_its_compartment_only(shared_client, households):
    w = households
    bundle = _everything(shared_client, w["ann"])
    expected = {
        ("Patient", w["ann"]),
        ("Observation", w["ann_a"]),
        ("Observation", w["ann_b"]),
        ("Observation", w["shared"]),
        ("Flag", w["ann_flag"]),
        ("Encounter", w["ann_enc"]),
        (QR, w["ann_qr"]),
    }
    assert {(t, i) for t, i, _ in entries(bundle)} == expected
    assert len(entries(bundle)) == len(expected)  # nothing twice


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ("Observation", {"ann_a", "ann_b", "shared"}),
        ("Observation,Flag", {"ann_a", "ann_b", "shared", "ann_flag"}),
        ("Patient,Encounter", {"ann", "ann_enc"}),
        (QR, {"ann_qr"}),
    ],
)
def test_everything_restricted_by_type(shared_client, households, types, expected):
    w = households
    assert set(ids(_everything(shared_client, w["ann"], _type=types))) == {w[n] for n in expected}


def test_everything_since(client):
    patient = create(client, {"resourceType": "Patient"})
    early = create(client, observation("urn:codes:since", subject=ref("Patient", patient)))
    time.sleep(0.01)
    late = client.post(
        "/Flag",
        json={"resourceType": "Flag", "status": "active", "code": {"text": "x"}, "subject": ref("Patient", patient)},
        headers={"Content-Type": "application/fhir+json"},
    ).json()
    got = set(ids(_everything(client, patient, _since=late["meta"]["lastUpdated"])))
    assert late["id"] in got and early not in got


def test_everything_pages_through_everything_exactly_once(shared_client, households):
    w = households
    whole = set(ids(_everything(shared_client, w["ann"])))
    for count in ("2", "3"):
        served = all_ids(shared_client, f"/Patient/{w['ann']}/$everything", {"_count": count})
        assert sorted(served) == sorted(whole), count


def test_everything_pages_one_resource_at_a_time(shared_client, households):
    """Regression: the Patient alone filled the first page and no next link followed (fixed in 899e871)."""
    w = households
    served = all_ids(shared_client, f"/Patient/{w['ann']}/$everything", {"_count": "1"})
    assert len(served) == 7


def test_everything_next_link_keeps_an_offset_in_since(client, households):
    """Regression: the next link was not URL-encoded, so the '+' of the offset came back as a space (899e871)."""
    w = households
    first = _everything(client, w["ann"], _since="2000-01-01T00:00:00+00:00", _count="2")
    assert link(first, "next")
    response = client.get(link(first, "next"))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"_type": "Questionnaire"}, 400),
        ({"_type": "Nonsense"}, 400),
        ({"_since": "soon"}, 400),
        ({"_count": "0"}, 400),
    ],
)
def test_everything_refuses_bad_parameters(shared_client, households, params, status):
    response = shared_client.get(f"/Patient/{households['ann']}/$everything", params=params)
    assert response.status_code == status, response.text


def test_everything_of_an_unknown_patient_is_not_found(shared_client):
    response = shared_client.get("/Patient/no-such-patient/$everything")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
