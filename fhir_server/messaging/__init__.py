"""Messages to clients between sessions (issue 22): a durable outbox of email and SMS, sent by a worker.

What others call:
- ``enqueue(write_session, kind, subject_id, channel, due_at=None, wake=...)`` inside their ``repo.write``;
- ``MessageWorker.register_renderer(kind, renderer)``: ``renderer(engine, row) -> Outgoing | None`` words a kind
  of message;
- ``Outgoing``: recipient, subject, text, html, language.
Delivery (``worker.MessageWorker``), transports (``smtp``, ``sms``, ``mailbox``) and the administrator's commands
(``fhir-server outbox``) build on these.
"""

from fhir_server.messaging.outbox import (
    CHANNELS,
    MessageOutboxError,
    MessageRow,
    Outgoing,
    Renderer,
    enqueue,
)
from fhir_server.messaging.transport import PermanentSendError, TransientSendError

__all__ = [
    "CHANNELS",
    "MessageOutboxError",
    "MessageRow",
    "Outgoing",
    "PermanentSendError",
    "Renderer",
    "TransientSendError",
    "enqueue",
]
