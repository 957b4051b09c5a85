"""The app as a SMART client (SMART App Launch 2.x: EHR launch and standalone launch, authorization code with
PKCE S256), framework-free.  ``start`` checks the ``iss`` against the registered EHRs, reads the EHR's SMART
configuration, opens a server-side session holding ``state`` and the PKCE verifier, and returns where to send the
browser; ``finish`` checks ``state``, exchanges the code, verifies the id_token and keeps the tokens and launch
context in the session — never in the browser.  Failures are ``LaunchRefused`` with a page title and text for
the person holding the device; nothing is written when a launch fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from fhir_server.auth.bearer import RemoteKeys
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.tokens import TokenError, verify_access_token
from fhir_server.ehr import registry
from fhir_server.ehr.client import DeliveryError
from fhir_server.ehr.registry import EhrRegistration
from fhir_server.ehr.tokens import SmartDiscovery, client_authentication
from fhir_server.outbound import OUTBOUND, OutboundError
from fhir_server.smart.app_context import VIEWS, read_app_context
from fhir_server.smart.ehr_reads import read_from_ehr
from fhir_server.smart.sessions import AppSession, AppSessionStore
from fhir_server.smart.therapist_rating import THERAPIST_RATING
from fhir_server.store.engine import Database
from fhir_server.store.records import utc_now

IDENTITY_SCOPES = ("openid", "fhirUser")
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}([-_][A-Za-z0-9]{1,8}){0,4}")  # BCP 47 as launches write it (en, fr-CA)
STYLE_SECONDS = 2.0  # the EHR's style sheet, read only when the token response gave no locale


class LaunchRefused(Exception):
    def __init__(self, title: str, text: str, status: int = 400) -> None:
        super().__init__(text)
        self.title, self.text, self.status = title, text, status


@dataclass(frozen=True)
class Started:
    session_id: str
    authorize_url: str


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def same_origin(url: str, issuer: str) -> bool:
    """Whether ``url`` is on the registered EHR's own origin (scheme, host and port of its FHIR base)."""
    default = {"https": 443, "http": 80}
    try:
        a, b = urlsplit(url), urlsplit(issuer)
        if a.scheme not in default or a.username is not None:
            return False
        return (a.scheme, a.hostname, a.port or default[a.scheme]) == (
            b.scheme,
            b.hostname,
            b.port or default[b.scheme],
        )
    except (ValueError, KeyError):
        return False


def launch_scope(ehr: EhrRegistration, config: dict[str, Any], *, ehr_launch: bool, view: str) -> str:
    """The registration's scopes in the EHR's syntax (v2 ``.cru`` when it announces permission-v2, else v1), with
    the launch scope for the kind of launch and the identity scopes the EHR supports.  The supervision page asks
    for reports only (``supervision_scope``)."""
    v2 = "permission-v2" in (config.get("capabilities") or [])
    if view == "supervision":
        return supervision_scope(ehr, config, ehr_launch=ehr_launch, v2=v2)
    wanted: list[str] = []
    for scope in ehr.scope.split():
        if scope in ("launch", "launch/patient"):
            continue
        wanted += [scope] if v2 or "/" not in scope else _as_v1(scope)
    wanted.append("launch" if ehr_launch else "launch/patient")
    if view == "clinician":
        wanted.append("patient/Flag.rs" if v2 else "patient/Flag.read")
    else:  # to read a Questionnaire the EHR names in fhirContext
        wanted.append("patient/Questionnaire.rs" if v2 else "patient/Questionnaire.read")
    supported = set(config.get("scopes_supported") or [])
    wanted += [s for s in IDENTITY_SCOPES if not supported or s in supported]
    return " ".join(dict.fromkeys(wanted))


def supervision_scope(ehr: EhrRegistration, config: dict[str, Any], *, ehr_launch: bool, v2: bool) -> str:
    """A user's read access to reports, no patient: none of the registration's patient/ scopes (the page is no
    patient's), its ``online_access`` when it has it (so the page outlives the access token's few minutes), the
    launch scope of an EHR launch and the identity scopes (whose user: reporting/access.py decides what they see)."""
    wanted = ["launch"] if ehr_launch else []
    wanted += [s for s in ehr.scope.split() if s == "online_access"]
    wanted.append("user/MeasureReport.r" if v2 else "user/MeasureReport.read")
    supported = set(config.get("scopes_supported") or [])
    wanted += [s for s in IDENTITY_SCOPES if not supported or s in supported]
    return " ".join(wanted)


def _as_v1(scope: str) -> list[str]:
    """``patient/Observation.cru`` → ``patient/Observation.read patient/Observation.write``."""
    base, _, access = scope.rpartition(".")
    if access in ("read", "write", "*"):
        return [scope]
    out = []
    if set(access) & set("rs"):
        out.append(f"{base}.read")
    if set(access) & set("cud"):
        out.append(f"{base}.write")
    return out


class SmartLauncher:
    def __init__(self, engine: Database, keys: KeyStore, sessions: AppSessionStore, discovery: SmartDiscovery) -> None:
        self.engine = engine
        self.keys = keys
        self.sessions = sessions
        self.discovery = discovery
        self._id_token_keys: dict[str, RemoteKeys] = {}
        self._refreshing = threading.Lock()

    def _configuration(self, ehr: EhrRegistration) -> dict[str, Any]:
        try:
            config = self.discovery.configuration(ehr)
        except DeliveryError:
            raise LaunchRefused(
                "The EHR could not be reached", "Its SMART configuration did not load. Please try again.", 502
            ) from None
        if not isinstance(config.get("authorization_endpoint"), str):
            raise LaunchRefused("The EHR cannot launch this app", "Its SMART configuration has no authorize endpoint")
        return config

    def start(self, *, iss: str, launch: str | None, measure: str | None, view: str, redirect_uri: str) -> Started:
        try:
            ehr = registry.by_issuer(self.engine, iss) if iss else None
        except registry.RegistrationError:
            ehr = None
        if ehr is None:
            raise LaunchRefused(
                "This EHR is not registered",
                "The app was opened from an EHR this server does not know. An administrator registers EHRs with "
                "'fhir-server ehr add'. Nothing was sent anywhere.",
                400,
            )
        if view not in VIEWS:
            raise LaunchRefused("Unknown view", "The launch asked for a view this app does not have.")
        config = self._configuration(ehr)
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(32)  # 256 bits, bound to this session
        session_id, _ = self.sessions.create_session(
            launch_state=state,
            code_verifier=verifier,
            launch_iss=ehr.issuer,
            ehr_id=ehr.id,
            questionnaire=measure,
            app_view=view,
        )
        params = {
            "response_type": "code",
            "client_id": ehr.client_id,
            "redirect_uri": redirect_uri,
            "scope": launch_scope(ehr, config, ehr_launch=bool(launch), view=view),
            "state": state,
            "aud": ehr.issuer,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if launch:
            params["launch"] = launch
        return Started(session_id, f"{config['authorization_endpoint']}?{urlencode(params)}")

    def finish(
        self,
        session: AppSession | None,
        *,
        code: str | None,
        state: str | None,
        error: str | None,
        redirect_uri: str,
        resolve_measure: Callable[[str], str],
    ) -> tuple[str, AppSession]:
        """(the session's new id for the cookie, the session with tokens and context).  ``resolve_measure`` turns a
        measure an appContext names into a canonical (``MeasureUnavailable`` when unknown)."""
        if session is None or not session.launch_state:
            raise LaunchRefused(
                "This launch has expired", "Please open the app again from the EHR. Nothing was saved.", 400
            )
        if not state or not hmac.compare_digest(state.encode(), session.launch_state.encode()):
            raise LaunchRefused(
                "This launch could not be verified",
                "The answer from the EHR did not match this launch. Please open the app again from the EHR.",
                400,
            )
        if error:
            self.sessions.end(session)
            raise LaunchRefused(
                "Access was not granted", "The EHR did not authorize the app, so nothing was opened or saved.", 403
            )
        if not code:
            raise LaunchRefused("This launch could not be completed", "The EHR sent no authorization code.", 400)
        ehr = registry.get(self.engine, session.ehr_id or 0)
        if ehr is None:
            raise LaunchRefused("This EHR is no longer registered", "Please ask an administrator.", 400)
        config = self._configuration(ehr)
        tokens = self._exchange(ehr, config, code, session.code_verifier or "", redirect_uri)
        fhir_user = self._fhir_user(ehr, config, tokens)
        context = tokens.get("fhirContext") if isinstance(tokens.get("fhirContext"), list) else []
        # A CDS Hooks card's link (its appContext) is more specific than the launch URL the EHR has configured for
        # the app, so its view and measure override the URL's.  A Questionnaire the EHR names in fhirContext still
        # wins over the card's measure: fhirContext is the EHR's own, typed statement of what this launch is about
        # (often a version it holds), while appContext is our CDS service's opaque note, written when the hook
        # fired and relayed unread by the EHR, so possibly staler than what the EHR launches now.
        app_context = read_app_context(
            tokens.get("appContext"), launch_view=session.app_view or "form", resolve_measure=resolve_measure
        )
        measure = self._measure_from_context(ehr, tokens["access_token"], context)
        if session.app_view == THERAPIST_RATING:  # the therapist's own form, whatever Questionnaire the EHR names
            measure = None
        updated = self.sessions.update(
            session,
            launch_state=None,
            code_verifier=None,
            access_token=tokens["access_token"],
            refresh_token=tokens.get("refresh_token"),
            token_expires_at=utc_now() + timedelta(seconds=int(tokens.get("expires_in") or 300)),
            scope=str(tokens.get("scope") or ""),
            patient=_text(tokens.get("patient")),
            encounter=_text(tokens.get("encounter")),
            fhir_user=fhir_user,
            fhir_context=context,
            need_patient_banner=bool(tokens.get("need_patient_banner")),
            smart_style_url=_text(tokens.get("smart_style_url")),
            questionnaire=measure or app_context.measure or session.questionnaire,
            app_view=app_context.view or session.app_view,
            app_flag=app_context.flag,
            **self._launch_language(ehr, tokens),
        )
        if updated is None:
            raise LaunchRefused("This launch has expired", "Please open the app again from the EHR.", 400)
        new_id = self.sessions.rekey(updated)  # a new id once authorized: a planted id is worth nothing
        if new_id is None:
            raise LaunchRefused("This launch has expired", "Please open the app again from the EHR.", 400)
        return new_id, updated

    def refresh(self, session: AppSession) -> AppSession | None:
        """The session with a new access token from its refresh token (granted with ``online_access``), or None
        when it has none or the EHR refuses: the page then asks for a new launch.  One refresh at a time in this
        process, and a request that finds the token replaced meanwhile takes the new one: a refresh token is good
        once (this server rotates them, and revokes the grant of one presented twice)."""
        with self._refreshing:
            current = self.sessions.get(session.session_hash)
            if current is None or not current.refresh_token or current.ehr_id is None:
                return None
            if current.access_token != session.access_token:
                return current
            ehr = registry.get(self.engine, current.ehr_id)
            if ehr is None:
                return None
            try:
                grant = {"grant_type": "refresh_token", "refresh_token": current.refresh_token}
                tokens = self._token_request(ehr, self._configuration(ehr), grant)
            except LaunchRefused:
                return None
            return self.sessions.update(
                current,
                access_token=tokens["access_token"],
                refresh_token=_text(tokens.get("refresh_token")) or current.refresh_token,
                token_expires_at=utc_now() + timedelta(seconds=int(tokens.get("expires_in") or 300)),
                scope=str(tokens.get("scope") or current.scope or ""),
            )

    def _exchange(
        self, ehr: EhrRegistration, config: dict[str, Any], code: str, verifier: str, redirect_uri: str
    ) -> dict[str, Any]:
        grant = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        return self._token_request(ehr, config, {**grant, "code_verifier": verifier})

    def _token_request(self, ehr: EhrRegistration, config: dict[str, Any], grant: dict[str, str]) -> dict[str, Any]:
        endpoint = config.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise LaunchRefused("The EHR cannot launch this app", "Its SMART configuration has no token endpoint")
        fields, auth = client_authentication(ehr, self.keys, endpoint)
        try:
            answer = OUTBOUND.request(
                "POST", endpoint, form={**grant, **fields}, basic_auth=auth, timeout=15.0,
                headers={"Accept": "application/json"},
            )  # fmt: skip
            tokens = answer.json() if answer.status_code == 200 else None
        except (OutboundError, ValueError):
            tokens = None
        if not isinstance(tokens, dict) or not isinstance(tokens.get("access_token"), str):
            raise LaunchRefused(
                "The EHR did not let the app in", "The sign-in could not be completed. Please open the app again.", 502
            )
        if str(tokens.get("token_type", "")).lower() != "bearer":
            raise LaunchRefused("The EHR did not let the app in", "The EHR issued an unexpected kind of token.", 502)
        return tokens

    def _launch_language(self, ehr: EhrRegistration, tokens: dict[str, Any]) -> dict[str, str]:
        """The launch's language preference, as ``language`` for the session (nothing when the EHR gives none): the
        token response's ``locale`` (a SMART launch context some EHRs send), else a ``locale`` or ``lang`` in the
        EHR's SMART style.  The form outranks it with the client's own choice and falls back from it to the
        Patient's and the browser's languages when the form is not offered in it (web/form_language.py)."""
        locale = tokens.get("locale")
        style = tokens.get("smart_style_url")
        # Read only from the EHR's own origin: a token response must not make this server fetch any address it names.
        if not _is_tag(locale) and isinstance(style, str) and same_origin(style, ehr.issuer):
            locale = self._style_locale(style)
        return {"language": str(locale).replace("_", "-")} if _is_tag(locale) else {}

    def _style_locale(self, url: str) -> str | None:
        """``locale`` or ``lang`` of the EHR's SMART style JSON; None when it has neither or cannot be read (the
        launch goes on: the style is a courtesy)."""
        if not url.startswith(("https://", "http://")):
            return None
        try:
            status, body = OUTBOUND.get_json(url, headers={"Accept": "application/json"}, timeout=STYLE_SECONDS)
        except OutboundError:
            return None
        if status != 200 or not isinstance(body, dict):
            return None
        found = body.get("locale") or body.get("lang")
        return found if _is_tag(found) else None

    def _measure_from_context(self, ehr: EhrRegistration, token: str, context: list[Any]) -> str | None:
        """A Questionnaire in fhirContext: a ``canonical`` is used as is; a ``reference`` names the EHR's copy,
        which is read with the launch token for its url|version (the EHR's ids are not ours)."""
        for item in context:
            if not isinstance(item, dict):
                continue
            canonical = item.get("canonical")
            if isinstance(canonical, str) and "/Questionnaire/" in canonical:
                return canonical
            reference = item.get("reference")
            if isinstance(reference, str) and reference.startswith("Questionnaire/"):
                found = self._questionnaire_canonical(ehr, token, reference)
                if found:
                    return found
        return None

    def _questionnaire_canonical(self, ehr: EhrRegistration, token: str, reference: str) -> str | None:
        body = read_from_ehr(ehr.issuer, token, reference)  # None: the chooser or the launch's measure decides
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            return None
        return f"{body['url']}|{body['version']}" if isinstance(body.get("version"), str) else body["url"]

    def _fhir_user(self, ehr: EhrRegistration, config: dict[str, Any], tokens: dict[str, Any]) -> str | None:
        """The user from a verified id_token (signature by the EHR's JWKS, issuer, audience = our client id)."""
        id_token = tokens.get("id_token")
        jwks_uri, issuer = config.get("jwks_uri"), config.get("issuer")
        if not isinstance(id_token, str) or not isinstance(jwks_uri, str) or not isinstance(issuer, str):
            return None
        keys = self._id_token_keys.setdefault(jwks_uri, RemoteKeys(jwks_uri))
        try:
            claims = verify_access_token(id_token, keys, issuer=issuer, audience=ehr.client_id, now=time.time())
        except TokenError:
            raise LaunchRefused(
                "The EHR's sign-in could not be verified", "Please open the app again from the EHR.", 502
            ) from None
        return _text(claims.get("fhirUser")) or _text(claims.get("profile"))


def _is_tag(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 35 and LANGUAGE_TAG.fullmatch(value) is not None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
