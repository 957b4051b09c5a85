"""Who is looking at the supervision page: the user named by the app session's access token, checked as the FHIR
API checks a bearer token (auth/bearer.py: this server's signing keys, issuer, audience, expiry, revocation) and
then judged by reporting/access.py exactly as ``$evaluate-measure`` judges it.  The page never reports as the
server: the session alone is not enough.

- A token of this server's own authorization server (the sandbox; a standalone or EHR launch whose ``iss`` is this
  server's FHIR base): verified, and its ``sub`` and ``fhirUser`` name one of this server's users, whose
  supervised organisations decide what they see.  An expired token is refreshed once with the session's refresh
  token (``online_access``), so the page outlives the token's few minutes.
- A token of an external EHR's authorization server: refused with a page.  Its user is the EHR's: ``sub`` is the
  EHR's identifier, and the id_token's ``fhirUser`` the EHR's Practitioner (``https://ehr.example/fhir/
  Practitioner/123``), while this server's users and their supervised organisations are registered with this
  server's own references (``Practitioner/123`` here).  Nothing ties the two, and matching them by id would let an
  EHR user whose id happens to equal one of ours see that supervisor's reports; so the supervisor opens the page
  from this server (a launch whose ``iss`` is this server's FHIR base) instead.
"""

from __future__ import annotations

from fhir_server.auth.bearer import BearerAuthenticator
from fhir_server.auth.caller import Caller
from fhir_server.auth.tokens import TokenError, unverified_issuer
from fhir_server.smart.launch import SmartLauncher
from fhir_server.smart.sessions import AppSession


class Refused(Exception):
    """A page for the person at the screen: what happened and what to do."""

    def __init__(self, title: str, text: str, status: int = 403) -> None:
        super().__init__(text)
        self.title, self.text, self.status = title, text, status


# (title, text) of each refusal; a new exception each time (a raised one keeps its traceback)
NOT_OPEN = ("The supervision page is not open", "Please open it again from the EHR or the sandbox.")
EXPIRED = ("The supervision page has expired", "Please open it again from the EHR or the sandbox.")
EXTERNAL = (
    "Open the supervision page from this server",
    "The EHR signed you in with its own account, which this server cannot match to one of its supervisors. Open "
    "the page with a launch from this server (its own sign-in), as your administrator set it up.",
)


def signed_in(
    session: AppSession | None,
    bearer: BearerAuthenticator,
    launcher: SmartLauncher,
    *,
    own_issuer: str,
    audiences: list[str],
) -> Caller:
    """The caller of the session's access token; ``Refused`` when there is no valid token of this server's."""
    if session is None or not session.access_token:
        raise Refused(*NOT_OPEN)
    try:
        issuer = unverified_issuer(session.access_token)
    except (TokenError, IndexError):
        issuer = None  # not a JWT: an EHR's opaque token
    if issuer != own_issuer:
        raise Refused(*EXTERNAL)
    try:
        return bearer.authenticate(f"Bearer {session.access_token}", own_issuer=own_issuer, audiences=audiences)
    except TokenError as err:
        if err.code != "expired":
            raise Refused(*EXPIRED) from None  # revoked, or not for this server: a new launch is the only way on
    refreshed = launcher.refresh(session)
    if refreshed is None or not refreshed.access_token:
        raise Refused(*EXPIRED)
    try:
        return bearer.authenticate(f"Bearer {refreshed.access_token}", own_issuer=own_issuer, audiences=audiences)
    except TokenError:
        raise Refused(*EXPIRED) from None
