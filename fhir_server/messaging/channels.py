"""Which transport each channel uses, from the settings: SMTP for email when FHIR_SERVER_SMTP_URL is set, the HTTP
gateway for SMS when FHIR_SERVER_SMS_GATEWAY_URL is; on the sandbox, a channel without one is captured in the
sandbox mailbox.  A channel with none is absent from the map: its rows stay pending (the worker says why)."""

from __future__ import annotations

from fhir_server.config import Settings
from fhir_server.messaging.mailbox import MailboxTransport, mailbox_folder
from fhir_server.messaging.sms import HttpGatewayProvider, SmsTransport
from fhir_server.messaging.smtp import EmailTransport
from fhir_server.messaging.transport import Transport

NOT_CONFIGURED = {
    "email": "no email transport is configured (FHIR_SERVER_SMTP_URL): waiting",
    "sms": "no SMS transport is configured (FHIR_SERVER_SMS_GATEWAY_URL): waiting",
}


def transports_from(settings: Settings) -> dict[str, Transport]:
    """Raises SmtpConfigError or SmsConfigError (ValueError) for settings that cannot work: better at start-up
    than as the last_error of every row."""
    found: dict[str, Transport] = {}
    if settings.smtp_url:
        found["email"] = EmailTransport(settings)
    if settings.sms_gateway_url:
        found["sms"] = SmsTransport(HttpGatewayProvider(settings))
    if settings.sandbox:
        folder = mailbox_folder(settings)
        for channel in ("email", "sms"):
            found.setdefault(channel, MailboxTransport(folder, channel, settings.mail_from))
    return found
