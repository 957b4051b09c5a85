"""Email over SMTP (smtplib): ``smtp://host[:port]`` with STARTTLS (required by default), or
``smtps://host[:port]`` with implicit TLS.  One connection per message: messages are few (a link, a reminder),
and a connection held open between them would only time out at the server.

The certificate is verified (the system's CAs, or FHIR_SERVER_SMTP_CA_FILE for a relay with a private CA), and
credentials are never sent over a connection without TLS."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import urlsplit

from fhir_server.config import Settings
from fhir_server.messaging.outbox import Outgoing
from fhir_server.messaging.transport import PermanentSendError, TransientSendError, Transport


class SmtpConfigError(ValueError):
    """FHIR_SERVER_SMTP_URL or FHIR_SERVER_MAIL_FROM cannot be used (said at start-up)."""


def build_email(outgoing: Outgoing, mail_from: str) -> EmailMessage:
    """text/plain always; text/html as its alternative when the renderer gave one; UTF-8 headers as needed."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = outgoing.recipient
    message["Subject"] = outgoing.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or None
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(outgoing.text, charset="utf-8")
    if outgoing.html is not None:
        message.add_alternative(outgoing.html, subtype="html", charset="utf-8")
    # after the parts: making the message multipart moves every Content-* header into its first part
    message["Content-Language"] = outgoing.language
    return message


class EmailTransport(Transport):
    channel = "email"

    def __init__(self, settings: Settings) -> None:
        parts = urlsplit(settings.smtp_url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise SmtpConfigError("FHIR_SERVER_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
        if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
            raise SmtpConfigError(
                "FHIR_SERVER_SMTP_URL is scheme://host[:port] only: credentials go in FHIR_SERVER_SMTP_USERNAME "
                "and FHIR_SERVER_SMTP_PASSWORD"
            )
        if "@" not in parseaddr(settings.mail_from)[1]:
            raise SmtpConfigError("FHIR_SERVER_MAIL_FROM must be an email address when FHIR_SERVER_SMTP_URL is set")
        self.implicit_tls = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.implicit_tls else 587)
        self.starttls = settings.smtp_starttls
        self.username = settings.smtp_username
        self.password = settings.smtp_password  # SecretStr: opened only for login()
        self.timeout = settings.smtp_timeout_seconds
        self.mail_from = settings.mail_from
        self.tls = ssl.create_default_context(cafile=settings.smtp_ca_file or None)

    def send(self, outgoing: Outgoing) -> None:
        message = build_email(outgoing, self.mail_from)
        try:
            smtp = self._connect()
            try:
                refused = smtp.send_message(message)
            finally:
                _quit(smtp)  # the message was taken once DATA was answered: a failing QUIT must not resend it
            if refused:  # only with several recipients; we send to one, so this is that one refused
                raise PermanentSendError("SMTP: the recipient was refused")
        except (TransientSendError, PermanentSendError):
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise _by_code("the recipient was refused", codes[0] if codes else 550) from None
        except smtplib.SMTPSenderRefused as exc:  # our From: a configuration the operator must fix
            raise TransientSendError(f"SMTP {exc.smtp_code}: the sender address was refused") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise TransientSendError(f"SMTP {exc.smtp_code}: the login was refused") from None
        except smtplib.SMTPDataError as exc:
            raise _by_code("the message was refused", exc.smtp_code) from None
        except smtplib.SMTPNotSupportedError:
            raise TransientSendError("SMTP: the server does not offer what this configuration needs") from None
        except smtplib.SMTPResponseException as exc:
            raise TransientSendError(f"SMTP {exc.smtp_code}: the server refused a command") from None
        except ssl.SSLError as exc:
            raise TransientSendError(f"SMTP: TLS failed ({type(exc).__name__})") from None
        except TimeoutError:
            raise TransientSendError(f"SMTP: no answer within {self.timeout:g} s") from None
        except ConnectionRefusedError:
            raise TransientSendError("SMTP: connection refused") from None
        except (OSError, smtplib.SMTPException) as exc:  # disconnected, DNS, network: the text may hold the host
            raise TransientSendError(f"SMTP: the connection failed ({type(exc).__name__})") from None

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.tls)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            encrypted = self.implicit_tls
            if not self.implicit_tls and self.starttls != "off":
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=self.tls)
                    smtp.ehlo()
                    encrypted = True
                elif self.starttls == "required":
                    raise TransientSendError("SMTP: the server does not offer STARTTLS, which is required")
            if self.username:
                if not encrypted:
                    raise TransientSendError("SMTP: credentials are not sent over a connection without TLS")
                smtp.login(self.username, self.password.get_secret_value())
        except BaseException:
            smtp.close()
            raise
        return smtp


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


def _by_code(what: str, code: int) -> TransientSendError | PermanentSendError:
    """SMTP 4xx may pass (a full mailbox, greylisting); 5xx will not."""
    error = PermanentSendError if 500 <= code < 600 else TransientSendError
    return error(f"SMTP {code}: {what}")
