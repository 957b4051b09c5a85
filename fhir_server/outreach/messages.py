"""What a form link's messages say, built when the message is sent (the message outbox's renderers).

No PHI in a message: the site's name, the link, its expiry; never the client's name, the measure or the clinician
(whoever sees a phone's lock screen learns only that a care team sent a questionnaire).  The words come from the
``mail`` gettext catalogue in the link's language (English when it has none); an email has a plain-text part and
an HTML alternative.

A message for a Task that is no longer open, a link past its expiry, or a reminder for a link whose form was sent
is not sent (None: the row is marked skipped).  A reminder for a link that was opened but whose form was never sent
carries a fresh token (the old one stops working): single use holds, and the client can still answer.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from babel.dates import format_date
from markupsafe import Markup, escape

from fhir_server import fhirjson
from fhir_server.i18n import Catalogues
from fhir_server.messaging import MessageRow, Outgoing
from fhir_server.outreach import task_requests
from fhir_server.outreach.links import FIRST, REMINDER, TOKEN_BYTES, LinkService, token_hash
from fhir_server.store import form_links_store as links_store
from fhir_server.store.engine import Database
from fhir_server.store.records import utc_now


class LinkMessages:
    """The renderers of ``form-link`` and ``form-reminder`` messages."""

    def __init__(self, links: LinkService, catalogues: Catalogues) -> None:
        self.links = links
        self.catalogues = catalogues

    def render(self, engine: Database, row: MessageRow) -> Outgoing | None:
        link = links_store.by_id(engine, row.subject_id)
        if link is None or link["expires_at"] <= utc_now():
            return None
        task = self.links.repo.read("Task", link["task_id"])
        if task is None or task.deleted or not task_requests.is_open(fhirjson.loads_stored(task.content or "{}")):
            return None  # completed, cancelled or expired since: nothing more to ask
        token = link["token"]
        if row.kind == REMINDER and link["used_at"] is not None:
            token = secrets.token_urlsafe(TOKEN_BYTES)
            if not links_store.renew_token(engine, link["id"], token_hash(token), token):
                return None
        language = link["language"] or "en"
        words = self._words(language, row.kind == REMINDER, self.links.url(token), link["expires_at"])
        if row.channel == "sms":
            return Outgoing(recipient=link["recipient"], subject="", text=words["sms"], html=None, language=language)
        return Outgoing(
            recipient=link["recipient"],
            subject=words["subject"],
            text=words["text"],
            html=words["html"],
            language=language,
        )

    def _words(self, language: str, reminder: bool, url: str, expires_at: datetime) -> dict[str, str]:
        _ = self.catalogues.translator(language, "mail").gettext
        values = {
            "site": self.links.settings.site_name,
            "date": format_date(expires_at.date(), format="long", locale=language.replace("-", "_")),
        }
        subject = (
            _("Reminder: a short questionnaire from %(site)s") if reminder else _("A short questionnaire from %(site)s")
        )
        ask = (
            _("You have not yet filled in the short questionnaire %(site)s sent you. It takes about a minute.")
            if reminder
            else _(
                "%(site)s asks you to fill in a short questionnaire before your next session. It takes about a minute."
            )
        )
        lines = [
            _("Hello,"),
            ask % values,
            _("Open it here:"),
            _("The link works once, until %(date)s.") % values,
        ]
        if self.links.asks_identity:
            lines.append(_("You will be asked for your year of birth."))
        lines.append(_("If you did not expect this message, you can ignore it."))
        text = "\n\n".join([*lines[:3], url, *lines[3:], f"— {values['site']}"]) + "\n"
        button = _("Open the questionnaire")
        paragraphs = [f"<p>{escape(line)}</p>" for line in (lines[0], lines[1])]
        paragraphs.append(f'<p><a href="{escape(url)}">{escape(button)}</a></p>')
        paragraphs += [f"<p>{escape(line)}</p>" for line in lines[3:]]
        html = Markup(
            f'<!DOCTYPE html><html lang="{escape(language)}"><body>{"".join(paragraphs)}'
            f"<p>— {escape(values['site'])}</p></body></html>"
        )
        sms = _(
            "%(site)s: please fill in a short questionnaire before your next session (link works once, until %(date)s):"
        )
        return {"subject": subject % values, "text": text, "html": str(html), "sms": f"{sms % values} {url}"}


KINDS = (FIRST, REMINDER)
