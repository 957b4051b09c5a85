"""The read-audit writer in /metrics (issue 24, point 3: audit batch lag).

Read AuditEvents wait in a queue in each server process until the writer thread stores them in a batch
(auth/audit.py); the oldest one's wait is the audit batch lag.  It stays under the flush interval (0.2 s) while
the database keeps up; it grows when the database is slow or down, and with it the records a crash of this process
would lose.  Each process has its own queue: the values are those of the process that answered the scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fhir_server.auth.audit import AuditWriter


class AuditCollector(Collector):
    def __init__(self, audit: AuditWriter) -> None:
        self.audit = audit

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # computed at scrape time

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth, oldest = self.audit.backlog()
        yield GaugeMetricFamily(
            "fhir_server_audit_queue_depth", "Read audit records queued in this process, not yet stored.", depth
        )
        yield GaugeMetricFamily(
            "fhir_server_audit_batch_lag_seconds",
            "How long the oldest queued read audit record of this process has waited to be stored (0 when none).",
            oldest,
        )
        yield CounterMetricFamily(
            "fhir_server_audit_records_stored", "Read audit records this process has stored.", self.audit.stored
        )
        yield CounterMetricFamily(
            "fhir_server_audit_flush_failures",
            "Batches of read audit records the database refused (kept and retried).",
            self.audit.failed_flushes,
        )
        yield CounterMetricFamily(
            "fhir_server_audit_records_dropped",
            "Read audit records dropped because the queue was full (the database unreachable for long).",
            self.audit.dropped,
        )
