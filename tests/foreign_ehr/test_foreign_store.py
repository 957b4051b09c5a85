"""The foreign EHR is what we claim: Medplum's FHIR store behind a SMART stand-in that grants v1 scopes only,
signs id_tokens without a ``kid``, and really behaves as its capability mode says.  Real HTTP against the real
Node process; no mocks."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.foreign_ehr.harness import ForeignEhr, running
from tests.support.jwks_host import serve_jwks

FHIR = {"Content-Type": "application/fhir+json"}
REDIRECT = "http://127.0.0.1:9/callback"  # never followed: the test reads the Location header


@pytest.fixture(scope="module")
def full_ehr() -> Iterator[ForeignEhr]:
    yield from running("full")


@pytest.fixture(scope="module")
def minimal_ehr() -> Iterator[ForeignEhr]:
    yield from running("minimal")


@pytest.fixture(scope="module")
def writer(full_ehr: ForeignEhr) -> Iterator[httpx.Client]:
    with full_ehr.client() as client:
        yield client


def unique() -> str:
    return uuid.uuid4().hex[:12]


def observation(patient: str = "p1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "SRS total"},
            "subject": {"reference": f"Patient/{patient}"}, **extra}  # fmt: skip


def search_ids(client: httpx.Client, query: str) -> list[str]:
    response = client.get(query)
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


# -- SMART discovery and keys ------------------------------------------------------------------------------------


def test_smart_configuration_offers_v1_scopes_only(full_ehr: ForeignEhr) -> None:
    config = httpx.get(f"{full_ehr.fhir_base}/.well-known/smart-configuration").json()
    assert "permission-v1" in config["capabilities"] and "permission-v2" not in config["capabilities"]
    assert {"launch-ehr", "launch-standalone", "client-confidential-asymmetric", "sso-openid-connect"} <= set(
        config["capabilities"]
    )
    assert config["issuer"] == full_ehr.fhir_base
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]
    assert config["token_endpoint"] == full_ehr.token_endpoint
    assert not any("." in s and s.rsplit(".", 1)[1] not in ("read", "write") for s in config["scopes_supported"])


def test_jwks_has_one_rsa_key_without_kid(full_ehr: ForeignEhr) -> None:
    keys = httpx.get(full_ehr.jwks_uri).json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and keys[0]["use"] == "sig"
    assert "kid" not in keys[0] and "d" not in keys[0]


def test_fhir_needs_a_token_but_metadata_does_not(full_ehr: ForeignEhr) -> None:
    refused = httpx.get(f"{full_ehr.fhir_base}/Patient")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer ")
    assert refused.json()["resourceType"] == "OperationOutcome"
    wrong = httpx.get(f"{full_ehr.fhir_base}/Patient", headers={"Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401
    assert httpx.get(f"{full_ehr.fhir_base}/metadata").json()["resourceType"] == "CapabilityStatement"


# -- EHR launch with the authorization code flow ---------------------------------------------------------------


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(ehr: ForeignEhr, client_id: str, scope: str, challenge: str | None, **extra: str) -> httpx.Response:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
              "state": "st-1", "aud": ehr.fhir_base, **extra}  # fmt: skip
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    return httpx.get(ehr.authorize_endpoint, params=params, follow_redirects=False)


def redirected(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(ehr: ForeignEhr, client_id: str, code: str, verifier: str | None) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id}
    if verifier:
        form["code_verifier"] = verifier
    return httpx.post(ehr.token_endpoint, data=form)


@pytest.fixture(scope="module")
def launch_world(full_ehr: ForeignEhr) -> dict[str, str]:
    """A patient with an encounter, their practitioner, and a registered public app."""
    world = {"patient": f"pat-{unique()}", "user": f"prac-{unique()}", "encounter": f"enc-{unique()}"}
    full_ehr.seed({"resourceType": "Patient", "id": world["patient"], "name": [{"family": "Rivera"}]})
    full_ehr.seed({"resourceType": "Practitioner", "id": world["user"], "name": [{"family": "Okafor"}]})
    full_ehr.seed({"resourceType": "Encounter", "id": world["encounter"], "status": "in-progress",
                   "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{world['patient']}"}})  # fmt: skip
    world["client_id"] = f"app-{unique()}"
    full_ehr.register_client(
        world["client_id"], scope="launch openid fhirUser patient/*.read patient/*.write", redirect_uris=[REDIRECT]
    )
    return world


def test_ehr_launch_grants_v1_scopes_and_an_id_token_without_kid(full_ehr: ForeignEhr, launch_world) -> None:
    w = launch_world
    launch = full_ehr.launch(w["patient"], w["user"], encounter=w["encounter"], app_context='{"view":"form"}')
    verifier, challenge = pkce()
    asked = "launch openid fhirUser patient/*.read patient/Observation.write patient/Observation.cruds patient/*.rs"
    back = redirected(authorize(full_ehr, w["client_id"], asked, challenge, launch=launch, nonce="n-42"))
    assert back["state"] == "st-1" and "error" not in back

    response = exchange(full_ehr, w["client_id"], back["code"], verifier)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["scope"].split() == ["launch", "openid", "fhirUser", "patient/*.read", "patient/Observation.write"]
    assert tokens["patient"] == w["patient"] and tokens["encounter"] == w["encounter"]
    assert tokens["appContext"] == '{"view":"form"}' and tokens["need_patient_banner"] is True

    id_token = tokens["id_token"]
    header = json.loads(base64.urlsafe_b64decode(id_token.split(".")[0] + "=="))
    assert header == {"alg": "RS256", "typ": "JWT"}
    key = RSAKey.import_key(httpx.get(full_ehr.jwks_uri).json()["keys"][0])
    claims = jwt.decode(id_token, key, algorithms=["RS256"]).claims
    assert claims["iss"] == full_ehr.fhir_base and claims["aud"] == w["client_id"] and claims["nonce"] == "n-42"
    assert claims["fhirUser"] == f"{full_ehr.fhir_base}/Practitioner/{w['user']}"
    assert claims["exp"] > time.time() > claims["iat"] - 5

    # The code is single-use.
    assert exchange(full_ehr, w["client_id"], back["code"], verifier).json()["error"] == "invalid_grant"

    # The token reads the launch patient's data, and not another patient's.
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    mine = httpx.post(f"{full_ehr.fhir_base}/Observation", json=observation(w["patient"]), headers={**auth, **FHIR})
    assert mine.status_code == 201, mine.text
    theirs = httpx.post(f"{full_ehr.fhir_base}/Observation", json=observation("someone-else"), headers={**auth, **FHIR})
    assert theirs.status_code == 403
    assert httpx.get(f"{full_ehr.fhir_base}/Patient/{w['patient']}", headers=auth).status_code == 200
    # patient/Observation.write only: no writing Conditions
    condition = {"resourceType": "Condition", "subject": {"reference": f"Patient/{w['patient']}"}}
    assert httpx.post(f"{full_ehr.fhir_base}/Condition", json=condition, headers={**auth, **FHIR}).status_code == 403


def test_token_refused_without_or_with_a_wrong_pkce_verifier(full_ehr: ForeignEhr, launch_world) -> None:
    w = launch_world
    for verifier in (None, "not-the-verifier"):
        _, challenge = pkce()
        launch = full_ehr.launch(w["patient"], w["user"])
        back = redirected(authorize(full_ehr, w["client_id"], "launch patient/*.read", challenge, launch=launch))
        response = exchange(full_ehr, w["client_id"], back["code"], verifier)
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_authorize_refuses_what_the_launcher_refuses(full_ehr: ForeignEhr, launch_world) -> None:
    w = launch_world
    _, challenge = pkce()
    assert authorize(full_ehr, "nobody", "launch", challenge).status_code == 400
    no_pkce = redirected(authorize(full_ehr, w["client_id"], "launch", None, launch=full_ehr.launch(w["patient"], "u")))
    assert no_pkce["error"] == "invalid_request" and no_pkce["state"] == "st-1"
    wrong_aud = redirected(authorize(full_ehr, w["client_id"], "launch", challenge, aud="http://elsewhere/fhir"))
    assert wrong_aud["error"] == "invalid_request"
    unknown_launch = redirected(authorize(full_ehr, w["client_id"], "launch", challenge, launch="made-up"))
    assert unknown_launch["error"] == "invalid_request"


def test_standalone_launch_picks_the_set_patient(full_ehr: ForeignEhr, launch_world) -> None:
    w = launch_world
    full_ehr.standalone_patient(w["patient"], user=w["user"])
    verifier, challenge = pkce()
    back = redirected(authorize(full_ehr, w["client_id"], "launch/patient openid fhirUser patient/*.read", challenge))
    tokens = exchange(full_ehr, w["client_id"], back["code"], verifier).json()
    assert tokens["patient"] == w["patient"] and "encounter" not in tokens and "appContext" not in tokens
    assert "id_token" in tokens


# -- full capabilities: conditional create, conditional update, transaction ------------------------------------


def test_full_metadata_declares_what_it_does(full_ehr: ForeignEhr) -> None:
    rest = httpx.get(f"{full_ehr.fhir_base}/metadata").json()["rest"][0]
    assert {"code": "transaction"} in rest["interaction"]
    flag = next(r for r in rest["resource"] if r["type"] == "Flag")
    assert flag["conditionalCreate"] is True and flag["conditionalUpdate"] is True and flag["updateCreate"] is False


def test_full_if_none_exist_on_identifier_matches(full_ehr: ForeignEhr, writer: httpx.Client) -> None:
    key = unique()
    body = observation(identifier=[{"system": "urn:test", "value": key}])
    first = writer.post("Observation", json=body, headers={**FHIR, "If-None-Exist": f"identifier=urn:test|{key}"})
    assert first.status_code == 201, first.text
    assert "/fhir/Observation/" in first.headers["location"] and "/_history/" in first.headers["location"]
    again = writer.post("Observation", json=body, headers={**FHIR, "If-None-Exist": f"identifier=urn:test|{key}"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert search_ids(writer, f"Observation?identifier=urn:test|{key}") == [first.json()["id"]]
    logged = [r for r in full_ehr.log() if r["path"] == "/fhir/Observation" and r["method"] == "POST"]
    assert logged[-1]["headers"]["if-none-exist"] == f"identifier=urn:test|{key}" and logged[-1]["status"] == 200


def test_full_if_none_exist_on_tag_matches_provenance(writer: httpx.Client) -> None:
    """Provenance has no identifier: the key travels as a meta.tag, and the store must match on ``_tag``."""
    tag = unique()
    body = {"resourceType": "Provenance", "recorded": "2026-11-20T16:45:00Z",
            "target": [{"reference": "Observation/x"}], "agent": [{"who": {"display": "fit"}}],
            "meta": {"tag": [{"system": "urn:key", "code": tag}]}}  # fmt: skip
    first = writer.post("Provenance", json=body, headers={**FHIR, "If-None-Exist": f"_tag=urn:key|{tag}"})
    again = writer.post("Provenance", json=body, headers={**FHIR, "If-None-Exist": f"_tag=urn:key|{tag}"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert search_ids(writer, f"Provenance?_tag=urn:key|{tag}") == [first.json()["id"]]


def test_full_conditional_update_and_no_update_as_create(writer: httpx.Client) -> None:
    key = unique()
    url = f"Flag?identifier=urn:flag|{key}"
    flag = {"resourceType": "Flag", "status": "active", "code": {"text": "follow up"},
            "subject": {"reference": "Patient/p1"}, "identifier": [{"system": "urn:flag", "value": key}]}  # fmt: skip
    created = writer.put(url, json=flag, headers=FHIR)
    assert created.status_code == 201, created.text
    updated = writer.put(url, json={**flag, "status": "inactive"}, headers=FHIR)
    assert updated.status_code == 200 and updated.json()["id"] == created.json()["id"]
    assert updated.json()["status"] == "inactive"
    missing = writer.put("Flag/never-made", json={**flag, "id": "never-made"}, headers=FHIR)
    assert missing.status_code == 405 and missing.json()["resourceType"] == "OperationOutcome"


def test_full_transaction_with_urn_uuid_references(writer: httpx.Client) -> None:
    key = unique()
    patient_url, obs_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:p", "value": key}]}
    obs = {**observation(), "subject": {"reference": patient_url}, "identifier": [{"system": "urn:o", "value": key}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": patient_url, "resource": patient,
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:p|{key}"}},
        {"fullUrl": obs_url, "resource": obs, "request": {"method": "POST", "url": "Observation"}},
    ]}  # fmt: skip
    response = writer.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201", "201"]
    [patient_id] = search_ids(writer, f"Patient?identifier=urn:p|{key}")
    [stored] = writer.get(f"Observation?identifier=urn:o|{key}").json()["entry"]
    assert stored["resource"]["subject"]["reference"] == f"Patient/{patient_id}"


def test_full_failed_transaction_leaves_nothing(writer: httpx.Client) -> None:
    key = unique()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:p", "value": key}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "subject": {"reference": "Patient/p1"}},  # no status, no code
         "request": {"method": "POST", "url": "Observation"}},
    ]}  # fmt: skip
    response = writer.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"
    assert search_ids(writer, f"Patient?identifier=urn:p|{key}") == []


# -- minimal capabilities (Epic-like): really neither transaction nor conditional writes -----------------------


def test_minimal_metadata_declares_nothing_conditional(minimal_ehr: ForeignEhr) -> None:
    rest = httpx.get(f"{minimal_ehr.fhir_base}/metadata").json()["rest"][0]
    assert not any(i["code"] in ("transaction", "batch") for i in rest["interaction"])
    assert all(r["conditionalCreate"] is False and r["conditionalUpdate"] is False for r in rest["resource"])


def test_minimal_refuses_transaction_ignores_if_none_exist_and_refuses_conditional_put(minimal_ehr) -> None:
    key = unique()
    body = observation(identifier=[{"system": "urn:test", "value": key}])
    with minimal_ehr.client() as client:
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [{"resource": body, "request": {"method": "POST", "url": "Observation"}}]}  # fmt: skip
        refused = client.post("", json=bundle, headers=FHIR)
        assert refused.status_code in (400, 405) and refused.json()["resourceType"] == "OperationOutcome"
        batch = client.post("", json={**bundle, "type": "batch"}, headers=FHIR)
        assert batch.status_code in (400, 405)

        condition = {**FHIR, "If-None-Exist": f"identifier=urn:test|{key}"}
        first, second = (client.post("Observation", json=body, headers=condition) for _ in range(2))
        assert (first.status_code, second.status_code) == (201, 201)
        assert first.json()["id"] != second.json()["id"]  # a duplicate: the header was ignored
        assert len(search_ids(client, f"Observation?identifier=urn:test|{key}")) == 2

        put = client.put(f"Observation?identifier=urn:test|{key}", json=body, headers=FHIR)
        assert put.status_code in (400, 405) and put.json()["resourceType"] == "OperationOutcome"
    logged = [r for r in minimal_ehr.log() if r["method"] == "POST" and r["path"] == "/fhir/Observation"]
    assert [r["headers"].get("if-none-exist") for r in logged[-2:]] == [f"identifier=urn:test|{key}"] * 2


# -- SMART Backend Services ----------------------------------------------------------------------------------------

JWKS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def jwks_host() -> Iterator[str]:
    """The integrator's web server publishing its JWKS (our server's /auth/jwks, in the real thing)."""
    with serve_jwks(JWKS) as root:
        yield root


def backend_client(ehr: ForeignEhr, jwks_host: str, alg: str) -> tuple[str, RSAKey | ECKey]:
    client_id, kid = f"backend-{unique()}", unique()
    parameters = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "ES384":
        key: RSAKey | ECKey = ECKey.generate_key("P-384", parameters=parameters, private=True)
    else:
        key = RSAKey.generate_key(2048, parameters=parameters, private=True)
    other = RSAKey.generate_key(2048, parameters={"kid": "someone-else"}, private=True)
    JWKS[f"/{client_id}.json"] = {"keys": [other.as_dict(private=False), key.as_dict(private=False)]}
    ehr.register_client(
        client_id, scope="system/Observation.write system/*.read", jwks_url=f"{jwks_host}/{client_id}.json"
    )
    return client_id, key


def assertion(ehr: ForeignEhr, client_id: str, key: RSAKey | ECKey, alg: str, jti: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": ehr.token_endpoint, "exp": now + 240, "iat": now,
              "jti": jti or unique()}  # fmt: skip
    return jwt.encode({"alg": alg, "typ": "JWT", "kid": key.kid}, claims, key, algorithms=[alg])


def backend_token(ehr: ForeignEhr, signed: str, scope: str) -> httpx.Response:
    form = {"grant_type": "client_credentials", "scope": scope, "client_assertion": signed,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}  # fmt: skip
    return httpx.post(ehr.token_endpoint, data=form)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_services_grants_v1_system_scopes_and_drops_v2(full_ehr: ForeignEhr, jwks_host: str, alg) -> None:
    client_id, key = backend_client(full_ehr, jwks_host, alg)
    signed = assertion(full_ehr, client_id, key, alg)
    asked = "system/Observation.write system/Observation.cru system/Patient.read system/Patient.rs system/Flag.write"
    response = backend_token(full_ehr, signed, asked)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert body["scope"].split() == ["system/Observation.write", "system/Patient.read"]  # v2 and unregistered dropped

    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert (
        httpx.post(f"{full_ehr.fhir_base}/Observation", json=observation(), headers={**auth, **FHIR}).status_code == 201
    )
    flag = {"resourceType": "Flag", "status": "active", "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}
    assert httpx.post(f"{full_ehr.fhir_base}/Flag", json=flag, headers={**auth, **FHIR}).status_code == 403

    replay = backend_token(full_ehr, signed, asked)  # the same jti again
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"


def test_backend_services_refusals(full_ehr: ForeignEhr, jwks_host: str) -> None:
    client_id, key = backend_client(full_ehr, jwks_host, "RS384")
    only_v2 = backend_token(full_ehr, assertion(full_ehr, client_id, key, "RS384"), "system/Observation.cru")
    assert only_v2.status_code == 400 and only_v2.json()["error"] == "invalid_scope"
    stranger = RSAKey.generate_key(2048, parameters={"kid": key.kid}, private=True)  # right kid, wrong key
    forged = backend_token(full_ehr, assertion(full_ehr, client_id, stranger, "RS384"), "system/*.read")
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_client"
