"""The interactive part of the authorization code flow: /auth/authorize → sign-in → (patient picker) → code.

The authorization request is validated by authlib's grant (client, exact redirect URI, response type, PKCE S256,
state, aud, launch) before anything is shown, kept server-side in the login session while the user signs in or
chooses a patient, and validated again when the code is issued.  Errors go back to the app only once its redirect
URI is verified; before that they are a page (RFC 6749 §4.1.2.1).  Framework-free: outcomes are Redirects and
Pages the web layer renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from authlib.oauth2.rfc6749.errors import AccessDeniedError, OAuth2Error

from fhir_server.auth.audit import OUTCOME_MINOR_FAILURE, Access, AuditWriter
from fhir_server.auth.caller import Caller
from fhir_server.auth.credentials import verify_password
from fhir_server.auth.login_sessions import LoginSession, LoginSessions
from fhir_server.auth.models import Client, GrantContext, User
from fhir_server.auth.oauth_request import FormRequest, Site
from fhir_server.auth.patients import PatientChoice, PatientDirectory
from fhir_server.auth.scopes import Grant
from fhir_server.auth.server import SmartAuthorizationServer
from fhir_server.auth.throttle import LoginThrottle, Throttled
from fhir_server.errors import FhirError
from fhir_server.store import oauth_store

LOGIN_PATH, PICKER_PATH = "/auth/login", "/auth/patient"


@dataclass
class Redirect:
    location: str


@dataclass
class Page:
    template: str
    context: dict[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass
class Outcome:
    response: Redirect | Page
    cookie: str | None = None  # a new login-session cookie value to set
    headers: dict[str, str] = field(default_factory=dict)


def error_page(
    title: str, message: str, status: int = 400, cookie: str | None = None, *, retry_link: bool = False
) -> Outcome:
    """A message page; ``retry_link`` offers the way back to the sign-in page (the pending request is kept)."""
    context = {"title": title, "message": message, "retry_link": LOGIN_PATH if retry_link else None}
    return Outcome(Page("message.html", context, status), cookie)


@dataclass(frozen=True)
class SignInOptions:
    """What the sign-in page offers: local passwords, an external identity provider (by its display name), or
    both; and the throttle that limits password guesses."""

    passwords: bool = True
    external_name: str | None = None
    throttle: LoginThrottle | None = None


class AuthorizeFlow:
    def __init__(
        self,
        server: SmartAuthorizationServer,
        sessions: LoginSessions,
        patients: PatientDirectory,
        audit: AuditWriter | None = None,
        options: SignInOptions | None = None,
    ) -> None:
        self.server, self.sessions, self.patients, self.audit = server, sessions, patients, audit
        self.options = options or SignInOptions()

    # -- /auth/authorize ---------------------------------------------------------------------------------
    def start(self, request: FormRequest, cookie: str | None) -> Outcome:
        try:
            self.server.get_consent_grant(request)
        except OAuth2Error as error:
            return self._error(error)
        session, new_cookie = self.sessions.ensure(cookie)
        self.sessions.set_pending(session, {"params": request.params})
        if session.user_id is None:
            return Outcome(Redirect(LOGIN_PATH), new_cookie)
        return self._continue(session, request.site, new_cookie)

    # -- /auth/login -------------------------------------------------------------------------------------
    def login_page(
        self, cookie: str | None, error: str | None = None, status: int = 200, headers: dict[str, str] | None = None
    ) -> Outcome:
        session, new_cookie = self.sessions.ensure(cookie)
        client = self._pending_client(session)
        context = {
            "csrf_token": session.csrf_token,
            "client_name": client.name if client else None,
            "scopes": self._pending_param(session, "scope").split(),
            "error": error,
            "passwords": self.options.passwords,
            "external_name": self.options.external_name,
        }
        return Outcome(Page("login.html", context, status), new_cookie, headers or {})

    def login(self, cookie: str | None, form: dict[str, str], site: Site, address: str | None = None) -> Outcome:
        session = self.sessions.load(cookie)
        if session is None:
            return error_page("Sign-in expired", "Your sign-in session has expired. Start again from the app.")
        if not session.csrf_matches(form.get("csrf_token")):
            return error_page("Request refused", "The form was not issued by this page (CSRF check failed).", 403)
        if form.get("action") == "cancel":
            return self._deny(session, site, "The user cancelled the sign-in")
        if not self.options.passwords:
            return self.login_page(cookie, f"Sign in with {self.options.external_name}: passwords are off.", 403)
        username = form.get("username", "")[:128]
        throttle = self.options.throttle
        try:
            attempt = throttle.begin(username, address) if throttle else None
        except Throttled as limit:
            # The password is not even checked: while throttled, a right guess must look like a wrong one.
            self.record_sign_in_failure(address, f"Sign-in throttled (username '{username}')")
            minutes = -(-limit.retry_after // 60)
            message = f"Too many failed sign-in attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
            return self.login_page(cookie, message, 429, {"Retry-After": str(limit.retry_after)})
        row = oauth_store.get_user_by_name(self.server.engine, username)
        # An unknown user costs an argon2 verification too, so timing does not tell which usernames exist.
        if not verify_password(row["password_hash"] if row else None, form.get("password", "")[:1024]) or row is None:
            self.record_sign_in_failure(address, f"Wrong password or unknown username '{username}'")
            return self.login_page(cookie, "Unknown username or wrong password.", 401)
        if throttle and attempt:
            throttle.succeeded(attempt)
        return self.complete_sign_in(session, User.from_row(row), site, address, "password")

    def complete_sign_in(
        self, session: LoginSession, user: User, site: Site, address: str | None, method: str
    ) -> Outcome:
        """The user is who they said (password, or the external identity provider): bind them to the session under
        a new id, audit it, and carry on with the authorization waiting for the sign-in."""
        new_cookie = self.sessions.sign_in(session, user.user_id)
        self._record(
            _user_caller(user, self._pending_param(session, "client_id"), site),
            Access("login", description=f"Signed in ({method})", client_address=address),
        )
        if session.pending is None:
            page = Page("message.html", {"title": "Signed in", "message": f"Signed in as {user.username}."})
            return Outcome(page, new_cookie)
        return self._continue(session, site, new_cookie)

    def record_sign_in_failure(self, address: str | None, description: str) -> None:
        self._record(None, Access("login", OUTCOME_MINOR_FAILURE, description, client_address=address))

    # -- /auth/patient -----------------------------------------------------------------------------------
    def picker(
        self,
        cookie: str | None,
        text: str,
        error: str | None = None,
        *,
        site: Site | None = None,
        address: str | None = None,
    ) -> Outcome:
        session, user = self._picking(cookie)
        if session is None or user is None:
            return error_page("No patient to choose", "There is no authorization waiting for a patient choice.")
        try:
            patients = self.patients.search(text)
        except FhirError as exc:
            patients, error = [], f"That search cannot be used: {exc}"
        else:
            self._record_listing(session, user, patients, text, site, address)
        context = {"csrf_token": session.csrf_token, "patients": patients, "query": text, "error": error}
        return Outcome(Page("patient_picker.html", context, 200 if error is None else 400))

    def pick(self, cookie: str | None, form: dict[str, str], site: Site, address: str | None = None) -> Outcome:
        session, user = self._picking(cookie)
        if session is None or user is None or session.pending is None:
            return error_page("No patient to choose", "There is no authorization waiting for a patient choice.")
        if not session.csrf_matches(form.get("csrf_token")):
            return error_page("Request refused", "The form was not issued by this page (CSRF check failed).", 403)
        if form.get("action") == "cancel":
            return self._deny(session, site, "The user chose no patient")
        patient = form.get("patient", "")
        if not self.patients.exists("Patient", patient):
            return self.picker(cookie, "", "That patient does not exist.", site=site, address=address)
        self.sessions.set_pending(session, {**session.pending, "patient": patient})
        return self._continue(session, site, None)

    def _record_listing(
        self,
        session: LoginSession,
        user: User,
        patients: list[PatientChoice],
        text: str,
        site: Site | None,
        address: str | None,
    ) -> None:
        """The picker shows patients' names and birth dates to the user: a search of patient data, audited like
        one on /fhir (who browsed, for which app, and every patient listed)."""
        ids = [p.id for p in patients]
        access = Access(
            "search-type",
            description="Patient picker of the authorization server",
            resources=[f"Patient/{i}" for i in ids],
            patients=ids,
            query=f"name={text}" if text.strip() else None,
            client_address=address,
        )
        self._record(_user_caller(user, self._pending_param(session, "client_id"), site), access)

    # -- the decision ------------------------------------------------------------------------------------
    def _continue(self, session: LoginSession, site: Site, cookie: str | None) -> Outcome:
        user = self.server.user(session.user_id) if session.user_id else None
        if user is None or session.pending is None:
            return error_page("Sign-in needed", "Start again from the app.", cookie=cookie)
        request = self._pending_request(session, site)
        try:
            grant = self.server.get_consent_grant(request, end_user=user)
        except OAuth2Error as error:
            self.sessions.set_pending(session, None)
            return self._error(error, cookie)
        launch = request.launch or {}
        if launch.get("username") and launch["username"] != user.username:
            return self._deny(session, site, "This launch was created for another user", cookie)
        patient = launch.get("patient")
        if patient is None and "launch/patient" in (request.scope or "").split():
            picked = session.pending.get("patient") if user.may_pick_patient else None
            patient = user.patient_id or picked
            if patient is None and user.may_pick_patient:
                return Outcome(Redirect(PICKER_PATH), cookie)
        request.grant_context = GrantContext(
            patient=patient,
            encounter=launch.get("encounter"),
            fhir_context=_json_list(launch.get("fhir_context")),
            # An EHR shows its own banner; a standalone app must show which patient it is about.
            need_patient_banner=bool(launch.get("need_patient_banner")) if launch else True,
            nonce=request.first("nonce"),
            auth_time=session.auth_time,
            app_context=launch.get("app_context"),
        )
        answer = self.server.create_authorization_response(request, grant_user=user, grant=grant)
        self.sessions.set_pending(session, None)
        return self._answer(answer, cookie)

    def _deny(self, session: LoginSession, site: Site, reason: str, cookie: str | None = None) -> Outcome:
        if session.pending is None:
            return error_page("Nothing to cancel", "There is no authorization waiting.", cookie=cookie)
        request = self._pending_request(session, site)
        self.sessions.set_pending(session, None)
        try:
            grant = self.server.get_consent_grant(request)
        except OAuth2Error as error:
            return self._error(error, cookie)
        error = AccessDeniedError(reason, redirect_uri=grant.redirect_uri, state=request.first("state"))
        return self._answer(self.server.handle_error_response(request, error), cookie)

    def _answer(self, answer: tuple[int, Any, list[tuple[str, str]]], cookie: str | None) -> Outcome:
        status, body, headers = answer
        location = dict(headers).get("Location")
        if location is not None:
            return Outcome(Redirect(location), cookie)
        description = body.get("error_description") if isinstance(body, dict) else None
        return error_page(
            "Authorization failed", str(description or "The request cannot be completed."), status, cookie
        )

    def _error(self, error: OAuth2Error, cookie: str | None = None) -> Outcome:
        if error.redirect_uri:  # verified against the client's registration by authlib before it is set
            return self._answer(self.server.handle_error_response(None, error), cookie)
        message = error.description or error.error or "The authorization request is not valid."
        return error_page("This app's request cannot be processed", str(message), 400, cookie)

    # -- helpers -----------------------------------------------------------------------------------------
    def _record(self, caller: Caller | None, access: Access) -> None:
        if self.audit is not None:
            self.audit.record(caller, access)

    def _pending_request(self, session: LoginSession, site: Site) -> FormRequest:
        params = [(str(k), str(v)) for k, v in (session.pending or {}).get("params", [])]
        return FormRequest("GET", site.authorize_endpoint, [], params, site)

    def _pending_param(self, session: LoginSession, name: str) -> str:
        for key, value in (session.pending or {}).get("params", []):
            if key == name:
                return str(value)
        return ""

    def _pending_client(self, session: LoginSession) -> Client | None:
        client_id = self._pending_param(session, "client_id")
        return self.server.query_client(client_id) if client_id else None

    def _picking(self, cookie: str | None) -> tuple[LoginSession | None, User | None]:
        session = self.sessions.load(cookie)
        user = self.server.user(session.user_id) if session and session.user_id else None
        if session is None or session.pending is None or user is None or not user.may_pick_patient:
            return None, None
        return session, user


def _user_caller(user: User, client_id: str, site: Site | None) -> Caller:
    """The signed-in user as the audit trail names them (their FHIR resource, and the app that asked)."""
    return Caller(
        grant=Grant(),
        authenticated=True,
        client_id=client_id or None,
        subject=user.user_id,
        fhir_user=user.fhir_user,
        issuer=site.issuer if site else None,
    )


def _json_list(value: Any) -> list[dict[str, Any]]:
    items = orjson.loads(value) if isinstance(value, str) and value else []
    return [i for i in items if isinstance(i, dict)]
