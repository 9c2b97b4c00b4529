"""Debounced retraining: a model is refreshed after a batch of new labels, not after each.

A source is due when K labels arrived that no retrain has taken yet, or T minutes passed
since the first of them. One retrain runs at a time, across sources: labels that arrive
while it runs wait for the next one, and a source that becomes due meanwhile starts when it
ends. A retrain that fails gives its labels back and is tried again T minutes later at the
earliest, so a broken model does not retrain on every label.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


def in_thread(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="retrain", daemon=True).start()


@dataclass
class _Pending:
    count: int = 0
    since: float | None = None  # when the first label not yet trained on arrived
    not_before: float = field(default=float("-inf"))  # after a failure


class Debouncer:
    def __init__(
        self,
        retrain: Callable[[str], object],
        k: int = 50,
        minutes: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        start: Callable[[Callable[[], None]], object] = in_thread,
    ):
        """``retrain(source)`` refreshes a source's model; ``clock`` gives seconds; ``start``
        runs a job, by default in a thread of its own so the caller never waits on it."""
        if k < 1:
            raise ValueError(f"k is the number of labels that makes a retrain, >= 1, got {k}")
        if minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {minutes}")
        self.retrain = retrain
        self.k = k
        self.seconds = minutes * 60.0
        self.clock = clock
        self.start = start
        self.running: str | None = None
        self.retrains = 0  # started so far
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def add(self, source: str, n: int = 1) -> str | None:
        """Counts ``n`` new labels of ``source``; returns the source whose retrain this
        started, if any."""
        with self._lock:
            pending = self._pending.setdefault(source, _Pending())
            pending.count += n
            if pending.since is None:
                pending.since = self.clock()
        return self.tick()

    def tick(self) -> str | None:
        """Starts the retrain of a due source unless one runs; call it now and then, so
        that T minutes can pass without a new label. Returns the source started, if any."""
        with self._lock:
            if self.running is not None:
                return None
            now = self.clock()
            due = [s for s, p in self._pending.items() if self._due(p, now)]
            if not due:
                return None
            # the source waiting longest goes first
            source = min(due, key=lambda s: self._pending[s].since or now)
            taken = self._pending.pop(source)
            self.running = source
            self.retrains += 1
        self.start(lambda: self._run(source, taken))
        return source

    def pending(self, source: str) -> int:
        """Labels of ``source`` that no retrain has taken yet."""
        with self._lock:
            p = self._pending.get(source)
            return p.count if p else 0

    def _due(self, p: _Pending, now: float) -> bool:
        if p.count == 0 or p.since is None or now < p.not_before:
            return False
        return p.count >= self.k or now - p.since >= self.seconds

    def _run(self, source: str, taken: _Pending) -> None:
        try:
            self.retrain(source)
        except Exception:
            log.exception("retraining %s failed; its labels wait for the next try", source)
            with self._lock:
                p = self._pending.setdefault(source, _Pending())
                p.count += taken.count
                p.since = min(x for x in (p.since, taken.since) if x is not None)
                p.not_before = self.clock() + self.seconds
        finally:
            with self._lock:
                self.running = None
        self.tick()
