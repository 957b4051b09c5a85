"""How busy this process is answering requests, for its background work to yield to (export/runner.py).

The request middleware counts requests as they start and end; a worker thread compares the count before and after
a unit of its work.  Only the event loop's thread writes the counters, and a reader needs no exact figure, so no
lock is taken on the request path.
"""

from __future__ import annotations


class RequestActivity:
    def __init__(self) -> None:
        self.started = 0  # requests begun since the process started
        self.in_flight = 0

    def begin(self) -> None:
        self.started += 1
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight -= 1

    def busy_since(self, started_before: int) -> bool:
        """Whether a request was answered or begun since ``started_before`` (an earlier ``started``)."""
        return self.in_flight > 0 or self.started != started_before


REQUESTS = RequestActivity()
