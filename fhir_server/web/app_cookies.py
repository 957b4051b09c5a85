"""The SMART app's session cookie on the HTTP side: reading the request's session, setting and clearing the cookie
(its value and attributes are smart/sessions.session_cookie's)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.smart.sessions import COOKIE_NAME, AppSession, session_cookie


def load_app_session(request: Request) -> AppSession | None:
    """The request's unexpired app session, or None.  Blocking (a database read): call it in a thread."""
    return request.app.state.app_sessions.load_session(request.cookies.get(COOKIE_NAME))


def set_session_cookie(response: Response, session_id: str, max_age: int) -> None:
    response.headers.append("set-cookie", session_cookie(session_id, max_age))


def clear_session_cookie(response: Response) -> None:
    # A partitioned cookie is removed only by a Set-Cookie that is partitioned too (same jar).
    response.headers.append(
        "set-cookie", f"{COOKIE_NAME}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=None; Partitioned"
    )
