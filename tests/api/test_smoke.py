"""FHIR R4 §3.1.0 RESTful API: the server answers /metadata and stores a resource (both databases)."""


def test_metadata_and_create_read(client):
    assert client.get("/metadata").json()["fhirVersion"] == "4.0.1"
    created = client.post(
        "/Patient",
        json={"resourceType": "Patient", "gender": "male"},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert created.status_code == 201, created.text
    read = client.get(f"/Patient/{created.json()['id']}")
    assert read.status_code == 200
    assert read.json()["gender"] == "male"
