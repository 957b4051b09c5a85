"""A real SMTP server for tests, as its own process (aiosmtpd): every message it accepts is written, as received,
to a folder the test reads (``MailServer.messages()`` parses them with the ``email`` package).

Optional: AUTH (PLAIN/LOGIN, one user, only after TLS), STARTTLS (required, with a certificate the test made), and
recipients it refuses for good (550) by domain.  ``stop()`` and ``start()`` take it down and bring it
back on the same port, for outage tests.

Run: ``python -m tests.support.mail_server --port P --folder DIR [--user U --password W] [--cert C --key K
] [--refuse-domain D]``.
"""

from __future__ import annotations

import argparse
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (cert.pem doubles as the CA file to trust)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fit test mail server")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert, private = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, private


class MailServer:
    """The SMTP server process, controlled from the test."""

    def __init__(self, folder: Path, port: int, *args: str) -> None:
        self.folder = folder
        self.inbox = folder / f"inbox-{port}"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.args = args
        self.log = folder / f"mail-server-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.support.mail_server", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--folder", str(self.inbox), *self.args], cwd=ROOT, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while True:  # up once it accepts connections
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mail server did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def messages(self) -> list[EmailMessage]:
        parser = BytesParser(policy=policy.default)
        found = []
        for path in sorted(self.inbox.glob("*.eml")):
            message = parser.parsebytes(path.read_bytes())
            assert isinstance(message, EmailMessage)
            found.append(message)
        return found

    def envelopes(self) -> list[dict[str, Any]]:
        """What the SMTP dialogue said (MAIL FROM, RCPT TO, whether TLS was on, who logged in), per message."""
        import json

        return [json.loads(p.read_text()) for p in sorted(self.inbox.glob("*.json"))]


# -- the process ----------------------------------------------------------------------------------------------------
class _Handler:
    def __init__(self, folder: Path, refuse_domain: str | None) -> None:
        self.folder = folder
        self.refuse_domain = refuse_domain
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.refuse_domain and address.lower().endswith("@" + self.refuse_domain):
            return "550 5.1.1 <" + address + ">: Recipient address rejected"  # echoes the address, as real ones do
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import json

        with self.lock:
            self.count += 1
            stem = f"{time.time_ns():020d}-{self.count:04d}-{uuid.uuid4().hex[:8]}"
        about = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "login": session.authenticated and _login_of(session),
        }
        (self.folder / f"{stem}.json.tmp").write_text(json.dumps(about))
        (self.folder / f"{stem}.eml.tmp").write_bytes(envelope.original_content)
        (self.folder / f"{stem}.json.tmp").rename(self.folder / f"{stem}.json")
        (self.folder / f"{stem}.eml.tmp").rename(self.folder / f"{stem}.eml")
        return "250 Message accepted for delivery"


def _login_of(session: Any) -> str | None:
    data = getattr(session, "auth_data", None)
    login = getattr(data, "login", None)
    return login.decode() if isinstance(login, bytes) else login


def main() -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--refuse-domain")
    args = parser.parse_args()

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            args.user,
            args.password,
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)  # False: aiosmtpd answers 535

    kwargs: dict[str, Any] = {}
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    if context is not None:
        kwargs.update(tls_context=context, require_starttls=True)
    if args.user:
        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=True)
    controller = Controller(
        _Handler(Path(args.folder), args.refuse_domain),
        hostname="127.0.0.1",
        port=args.port,
        **kwargs,
    )
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
