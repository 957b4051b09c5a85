"""The supervision page (thin; the content is assembled in supervision/page.py, the user established in
supervision/caller.py).

``GET /app/supervision?from=2026-01&to=2026-12&scope=Organization/x``      the page, after a launch with
                                                                          ``view=supervision``
``GET /app/supervision.csv?…``                                            the same cells as CSV (attachment)

Both evaluate the indicators as the signed-in user (their token's grant, their supervised organisations) and are
audited; a user who may not see a report gets a page saying why.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_server.auth import urls
from fhir_server.auth.caller import Caller
from fhir_server.auth.guard import GuardedInteractions
from fhir_server.errors import FhirError
from fhir_server.i18n.app_texts import N_
from fhir_server.supervision.caller import Refused, signed_in
from fhir_server.supervision.charts import month_label
from fhir_server.supervision.page import BadChoice, SupervisionPage, build_page, choice_from
from fhir_server.supervision.table import as_csv
from fhir_server.web.app_cookies import load_app_session
from fhir_server.web.form_pages import message, page_headers, remember_language, render

router = APIRouter(prefix="/app", include_in_schema=False)


def _caller(request: Request) -> Caller:
    state, base = request.app.state, str(request.base_url)
    session = remember_language(request, load_app_session(request))
    own_issuer, audiences = urls.issuer(state.settings, base), urls.audiences(state.settings, base)
    return signed_in(session, state.bearer, state.smart_launcher, own_issuer=own_issuer, audiences=audiences)


def _page(request: Request) -> SupervisionPage:
    """Blocking (the token check, the reports): run in the thread pool."""
    state, settings = request.app.state, request.app.state.settings
    now = datetime.now(UTC)
    choice = choice_from(request.query_params, now.date())
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    client = request.client.host if request.client else None
    fhir = GuardedInteractions.bind(state.fhir, _caller(request), state.access, state.audit, client, target)
    return build_page(
        fhir, choice, now=now, minimum=settings.report_min_clients, dropout_days=settings.dropout_days,
        request_url=target,
    )  # fmt: skip


async def _built(request: Request) -> SupervisionPage | Response:
    try:
        return await run_in_threadpool(_page, request)
    except Refused as refused:
        return message(request, refused.title, refused.text, refused.status)
    except BadChoice as bad:
        return message(request, N_("That period or scope cannot be shown"), str(bad), 400)
    except FhirError as refused:  # reporting/access.py: no reports for this user, or not for that organisation
        return message(request, N_("No reports for you here"), str(refused), refused.status)


@router.get("/supervision")
async def supervision(request: Request) -> Response:
    page = await _built(request)
    if isinstance(page, Response):
        return page
    csv_link = f"/app/supervision.csv?{urlencode(page.choice.query)}"
    return render(request, "supervision.html", {"page": page, "csv_link": csv_link, "month_label": month_label})


@router.get("/supervision.csv")
async def supervision_csv(request: Request) -> Response:
    page = await _built(request)
    if isinstance(page, Response):
        return page
    name = f"supervision-{page.choice.start}-to-{page.choice.end}.csv"
    headers = {**page_headers(request.app.state.settings), "Content-Disposition": f'attachment; filename="{name}"'}
    return Response(as_csv(page), media_type="text/csv; charset=utf-8", headers=headers)
