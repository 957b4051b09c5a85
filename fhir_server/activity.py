"""How busy this process is answering requests, for its background work to yield to (export/runner.py).

The request middleware adds up the time requests take (each at its end); a worker thread compares the total before
and after a unit of its work.  Only the event loop's thread writes the counters, and a reader needs no exact
figure, so no lock is taken on the request path.
"""

from __future__ import annotations

import time


class RequestActivity:
    def __init__(self) -> None:
        self.request_seconds = 0.0  # the time requests that ended took, added up (two at once count twice)

    def ended(self, seconds: float) -> None:
        self.request_seconds += seconds

    def load_since(self, request_seconds_before: float, since: float) -> float:
        """How busy the process was since the monotonic time ``since``, when the total was
        ``request_seconds_before``: the request time that passed over the wall time, at most 1 (a status poll
        in a second is ~0.002; a dozen clients in a closed loop, 1)."""
        wall = time.monotonic() - since
        if wall <= 0:
            return 0.0
        return min(1.0, (self.request_seconds - request_seconds_before) / wall)


def yield_seconds(work_seconds: float, load: float, share: float) -> float:
    """How long background work that just took ``work_seconds`` pauses, so that under full ``load`` it takes
    ``share`` of a thread's time (and the rest in proportion to the load; no pause when idle)."""
    if share >= 1 or load <= 0:
        return 0.0
    return work_seconds * (1 - share) / share * min(load, 1.0)


REQUESTS = RequestActivity()
