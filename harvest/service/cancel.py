"""Cancelling a run (``POST /runs/{id}/cancel``).

A request only flags the run; the run's own thread acts on the flag, before its next step
or while a step runs. A running step's process group gets SIGTERM, on which a crawl stops
Scrapy's engine, commits the batch in hand and prints its account, as on any stop; what
has not ended ``grace`` seconds later gets SIGKILL. What was committed stays committed and
the next crawl resumes from it. The run ends ``cancelled``.
"""

from __future__ import annotations

import threading
from typing import Any

from ingestion.errors import ConflictError
from ingestion.runs import ACTIVE

# seconds the request waits to answer with the run ended; past that it answers 202 and the
# run ends on its own (within the grace and its SIGKILL)
ANSWER_WAIT = 15.0


class NotCancellableError(ConflictError):
    hint = "only a queued or running run of this service can be cancelled"


class Cancels:
    """The runs asked to stop, one event each, set by a request and read by the run."""

    def __init__(self) -> None:
        self._events: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def watch(self, run_id: int) -> threading.Event:
        with self._lock:
            return self._events.setdefault(run_id, threading.Event())

    def request(self, run_id: int) -> bool:
        """Flags ``run_id``; False when no run of this service by that id is active."""
        with self._lock:
            event = self._events.get(run_id)
        if event is None:
            return False
        event.set()
        return True

    def requested(self, run_id: int) -> bool:
        with self._lock:
            event = self._events.get(run_id)
        return event is not None and event.is_set()

    def forget(self, run_id: int) -> None:
        with self._lock:
            self._events.pop(run_id, None)


def check_cancellable(run: dict[str, Any]) -> None:
    """NotCancellableError unless ``run`` is active and the service's own."""
    if run["status"] not in ACTIVE:
        raise NotCancellableError(f"run {run['id']} has already ended ({run['status']})")
    if run["trigger"] == "cli":
        raise NotCancellableError(
            f"run {run['id']} is a crawl started from the command line (pid {run['pid']}): "
            "stop it there, or with SIGTERM"
        )
