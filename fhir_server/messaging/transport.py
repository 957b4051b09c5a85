"""What every transport is: ``send(outgoing)`` returns once the peer (an SMTP server, an SMS gateway, the sandbox
mailbox) has taken the message, or raises one of the two errors below, whose text is safe to log and to keep in
``last_error``: it names the kind of failure and a status code, never the recipient, the words or a credential
(an SMTP server's reply often quotes the address, so its text is left out)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from fhir_server.messaging.outbox import Outgoing


class SendError(Exception):
    """Base of the two outcomes a transport reports; ``str()`` is safe to log."""


class TransientSendError(SendError):
    """May pass by itself: retried with backoff (connection refused, timeouts, SMTP 4xx, HTTP 5xx and 429, a
    configuration the operator can fix such as a refused login)."""


class PermanentSendError(SendError):
    """Will not pass by retrying this message: the row is dead at once (SMTP 5xx for the recipient or the
    content, HTTP 4xx from the gateway)."""


class Transport(ABC):
    channel: str

    @abstractmethod
    def send(self, outgoing: Outgoing) -> None:
        """Hand the message over; raise TransientSendError or PermanentSendError."""

    def close(self) -> None:  # noqa: B027 - most transports hold nothing between messages
        """Release what the transport holds (a connection pool)."""
