"""SMS through a provider.  One provider is built in: a generic HTTP gateway that takes one POST per message at
FHIR_SERVER_SMS_GATEWAY_URL, with a JSON body made from FHIR_SERVER_SMS_BODY_TEMPLATE and a bearer token or basic
credentials.  Requests go through outbound.py (timeouts, no redirects, a size limit on the answer), only ever to
that configured URL: nothing in a message decides where the server connects."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from urllib.parse import urlsplit

from fhir_server.config import Settings
from fhir_server.messaging.outbox import Outgoing
from fhir_server.messaging.transport import PermanentSendError, TransientSendError, Transport
from fhir_server.outbound import Outbound, OutboundError

MAX_ANSWER_BYTES = 64 * 1024


class SmsConfigError(ValueError):
    """The gateway settings cannot be used (said at start-up)."""


class SmsProvider(ABC):
    @abstractmethod
    def send_sms(self, to: str, text: str) -> None:
        """Send one SMS; raise TransientSendError or PermanentSendError."""

    def close(self) -> None:  # noqa: B027 - a provider may hold nothing
        """Release the provider's connections."""


def fill_template(template: str, to: str, text: str) -> bytes:
    """The template with ``{to}`` and ``{text}`` replaced by the values JSON-escaped (without their quotes, as the
    placeholders stand inside JSON strings): a quote or a newline in the text cannot change the body's shape."""
    escaped = {"{to}": json.dumps(to, ensure_ascii=False)[1:-1], "{text}": json.dumps(text, ensure_ascii=False)[1:-1]}
    # one pass, so a value that itself contains "{text}" is not substituted again
    out, i = [], 0
    while i < len(template):
        for placeholder, value in escaped.items():
            if template.startswith(placeholder, i):
                out.append(value)
                i += len(placeholder)
                break
        else:
            out.append(template[i])
            i += 1
    return "".join(out).encode("utf-8")


class HttpGatewayProvider(SmsProvider):
    def __init__(self, settings: Settings, outbound: Outbound | None = None) -> None:
        parts = urlsplit(settings.sms_gateway_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise SmsConfigError(
                "FHIR_SERVER_SMS_GATEWAY_URL must be an http(s) URL without credentials (they go in "
                "FHIR_SERVER_SMS_GATEWAY_TOKEN, or FHIR_SERVER_SMS_GATEWAY_USERNAME and _PASSWORD)"
            )
        self.url = settings.sms_gateway_url
        self.template = settings.sms_body_template
        try:  # checked once with harmless values: a broken template fails the start, not every message
            json.loads(fill_template(self.template, "+10000000000", 'a "quoted"\nline'))
        except ValueError:
            problem = "FHIR_SERVER_SMS_BODY_TEMPLATE is not JSON once {to} and {text} are filled in"
            raise SmsConfigError(problem) from None
        if "{to}" not in self.template or "{text}" not in self.template:
            raise SmsConfigError("FHIR_SERVER_SMS_BODY_TEMPLATE must contain both {to} and {text}")
        self.token = settings.sms_gateway_token
        self.username = settings.sms_gateway_username
        self.password = settings.sms_gateway_password
        if self.token.get_secret_value() and self.username:
            raise SmsConfigError("set FHIR_SERVER_SMS_GATEWAY_TOKEN or a username and password, not both")
        self.timeout = settings.sms_timeout_seconds
        self.outbound = outbound or Outbound()

    def send_sms(self, to: str, text: str) -> None:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = self.token.get_secret_value()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        basic = (self.username, self.password.get_secret_value()) if self.username else None
        try:
            answer = self.outbound.request(
                "POST",
                self.url,
                headers=headers,
                content=fill_template(self.template, to, text),
                basic_auth=basic,
                timeout=self.timeout,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except OutboundError as exc:  # its text is safe: the kind of failure, never the URL or the body
            raise TransientSendError(f"SMS gateway: {exc}") from None
        status = answer.status_code
        if 200 <= status < 300:
            return
        if status == 429 or status >= 500:
            raise TransientSendError(f"SMS gateway: HTTP {status}")
        if 300 <= status < 400:  # redirects are not followed (the body would go elsewhere): the URL needs fixing
            raise TransientSendError(f"SMS gateway: HTTP {status} (a redirect, not followed)")
        raise PermanentSendError(f"SMS gateway: HTTP {status}")

    def close(self) -> None:
        self.outbound.close()


class SmsTransport(Transport):
    channel = "sms"

    def __init__(self, provider: SmsProvider) -> None:
        self.provider = provider

    def send(self, outgoing: Outgoing) -> None:
        self.provider.send_sms(outgoing.recipient, outgoing.text)

    def close(self) -> None:
        self.provider.close()
