"""The client's side between sessions (issue 22): one-time form links sent for a Task, and the outbox of messages
(email, SMS) that carry them.

``form_links``: one row per link.  The token itself is never stored in the clear: ``token_hash`` (SHA-256) finds
the row when the link is opened; ``token_sealed`` (AES-GCM under the server's secret key, store/crypto.py) lets a
reminder carry the same link again.  ``recipient_sealed`` is the address (email or phone number), sealed for the
same reason as the EHR tokens: it identifies the client.  Expiry follows the Task's ``restriction.period.end``.
Wrong answers to the identity check are counted in the sign-in throttle's table (auth/throttle.py), per link and
per client address.

``message_outbox``: one row per message to send (the first link, each reminder), inserted in the transaction that
makes it due.  The message's words are built when it is sent, from the then-current link and Task (a reminder for
a Task completed meanwhile is skipped, not sent); nothing of the message is kept here.  A worker claims a due row
by moving ``next_attempt_at`` past its lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several server
processes can share the outbox without sending anything twice.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from fhir_server.store.tables import BigId, metadata

form_links = Table(
    "form_links",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("token_sealed", Text, nullable=False),
    Column("task_id", String(64), nullable=False),
    Column("patient", String(64), nullable=False),  # the Patient id the Task is for (this server's id)
    Column("questionnaire", Text, nullable=False),  # canonical url|version the link opens
    Column("ehr_id", BigInteger, nullable=True),  # where the response is written back (ehr_registrations.id)
    Column("channel", String(16), nullable=False),  # email | sms
    Column("recipient_sealed", Text, nullable=False),
    Column("language", String(16), nullable=True),  # the client's language for the message and the form
    Column("expires_at", DateTime, nullable=False),  # naive UTC
    Column("used_at", DateTime, nullable=True),  # single use: set when the link opened a form session
    Column("created_at", DateTime, nullable=False),
    Index("ix_form_links_task", "task_id"),
)

message_outbox = Table(
    "message_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # form-link | form-reminder: which renderer builds the message
    Column("subject_id", BigInteger, nullable=False),  # the row the renderer reads (form_links.id)
    Column("channel", String(16), nullable=False),  # email | sms
    Column("status", String(16), nullable=False),  # pending | sent | skipped | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime, nullable=False),  # due time, then the claim's lease
    Column("last_error", Text, nullable=True),  # never PHI: the transport's error class and code
    Column("created_at", DateTime, nullable=False),
    Column("sent_at", DateTime, nullable=True),
    Index("ix_message_outbox_due", "status", "next_attempt_at"),
    Index("ix_message_outbox_subject", "subject_id"),
)
