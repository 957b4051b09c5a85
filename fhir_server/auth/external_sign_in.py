"""Sign-in through the external OpenID Connect identity provider: the "Sign in with …" button of /auth/login and
the provider's answer at /auth/login/oidc/callback.

The round trip is bound to the login session: ``state`` (256 random bits; only its digest is kept), ``nonce`` and
the PKCE verifier are stored in the session row, and the callback must come back with that session's cookie and
that state.  It is taken from the session as it is checked, so a callback works once.  The identity is then mapped
to a user registered here, by an explicit link (``fhir-server users add … --external-subject VALUE``), never by
creating an account; the rest (session rotation, audit, the pending SMART authorization) is exactly what a
password sign-in does (``AuthorizeFlow.complete_sign_in``).  Whatever fails, the session stays signed out and the
pending authorization waits, so the user can try again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from fhir_server.auth.authorize import LOGIN_PATH, AuthorizeFlow, Outcome, Redirect, error_page
from fhir_server.auth.credentials import digest, new_secret
from fhir_server.auth.external_idp import ExternalIdentityProvider, IdpError
from fhir_server.auth.id_tokens import claim_value
from fhir_server.auth.login_sessions import LoginSession, LoginSessions
from fhir_server.auth.models import User
from fhir_server.auth.oauth_request import Site
from fhir_server.store import oauth_store

CALLBACK_PATH = f"{LOGIN_PATH}/oidc/callback"
ROUND_TRIP_SECONDS = 600  # time allowed at the provider's sign-in page


def pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class ExternalSignIn:
    def __init__(self, provider: ExternalIdentityProvider, flow: AuthorizeFlow, sessions: LoginSessions) -> None:
        self.provider, self.flow, self.sessions = provider, flow, sessions
        self.name = provider.config.display_name

    def start(self, cookie: str | None, form: dict[str, str], site: Site) -> Outcome:
        """POST /auth/login/oidc (the button): off to the provider."""
        session = self.sessions.load(cookie)
        if session is None:
            return error_page("Sign-in expired", "Your sign-in session has expired. Start again from the app.")
        if not session.csrf_matches(form.get("csrf_token")):
            return error_page("Request refused", "The form was not issued by this page (CSRF check failed).", 403)
        state, nonce, verifier = new_secret(), new_secret(), new_secret(48)
        redirect_uri = site.origin + CALLBACK_PATH
        try:
            location = self.provider.authorization_url(
                redirect_uri=redirect_uri, state=state, nonce=nonce, code_challenge=pkce_challenge(verifier)
            )
        except IdpError as exc:
            return error_page(f"Sign-in with {self.name} is unavailable", str(exc), exc.status, retry_link=True)
        details = {
            "state": digest(state),
            "nonce": nonce,
            "verifier": verifier,
            "redirect_uri": redirect_uri,
            "expires": int(time.time()) + ROUND_TRIP_SECONDS,
        }
        self.sessions.start_external(session, details)
        return Outcome(Redirect(location))

    def callback(self, cookie: str | None, params: dict[str, str], site: Site, address: str | None) -> Outcome:
        """GET /auth/login/oidc/callback: the provider's answer (OpenID Connect Core §3.1.2.5 and §3.1.2.6)."""
        title = f"Sign-in with {self.name} failed"
        session = self.sessions.load(cookie)
        details = self.sessions.take_external(session) if session else None
        state = params.get("state", "")
        if session is None or details is None:
            return error_page(title, "This answer does not belong to a sign-in in progress here. Start again.")
        if not hmac.compare_digest(digest(state), str(details.get("state", ""))):
            self.flow.record_sign_in_failure(address, f"{self.name}: callback with a state of another sign-in")
            return error_page(title, "This answer belongs to another sign-in (state mismatch).", retry_link=True)
        if int(details.get("expires", 0)) < time.time():
            return error_page(title, "The sign-in took too long. Please try again.", retry_link=True)
        if params.get("iss") not in (None, self.provider.config.issuer):
            # RFC 9207: the answer names the provider that sent it; another one's answer is a mix-up attack.
            return error_page(title, "The answer came from another identity provider.", retry_link=True)
        if params.get("error"):
            self.flow.record_sign_in_failure(address, f"{self.name}: {params['error'][:60]}")
            reason = "you cancelled or it refused" if params["error"] == "access_denied" else params["error"][:60]
            return error_page(title, f"{self.name} did not sign you in ({reason}).", 403, retry_link=True)
        if not params.get("code"):
            return error_page(title, f"{self.name} answered without a sign-in code.", retry_link=True)
        try:
            claims = self.provider.redeem(
                code=params["code"],
                redirect_uri=str(details["redirect_uri"]),
                code_verifier=str(details["verifier"]),
                nonce=str(details["nonce"]),
            )
        except IdpError as exc:
            self.flow.record_sign_in_failure(address, f"{self.name}: {exc}")
            return error_page(title, str(exc), exc.status, retry_link=True)
        return self._signed_in(session, claims, site, address)

    def _signed_in(self, session: LoginSession, claims: dict[str, Any], site: Site, address: str | None) -> Outcome:
        config = self.provider.config
        value = claim_value(claims, config.user_claim)
        row = oauth_store.get_user_by_external(self.flow.server.engine, config.issuer, value) if value else None
        if row is None:
            detail = f"{config.user_claim}={value}" if value else f"no usable {config.user_claim}"
            self.flow.record_sign_in_failure(address, f"{self.name}: identity not registered here ({detail})")
            named = f" as {value}" if value else ""
            message = (
                f"You are signed in at {self.name}{named}, but that identity is not registered on this server. "
                "Ask an administrator to register it (fhir-server users add … --external-subject)."
            )
            return error_page("Not registered here", message, 403)
        return self.flow.complete_sign_in(session, User.from_row(row), site, address, f"through {self.name}")
