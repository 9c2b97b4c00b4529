"""The progress of a curate through a long backlog: rows checked, deduplicated and
committed, and rows a second, after each batch.

A rich bar on a terminal; elsewhere a plain line a batch when asked for, and by default a
line every 5 s at most, so that a long backlog is never silent: ``HARVEST_PROGRESS`` is
True, False or "auto" (the default), as for a crawl (``spiders/progress.py``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from validation.gate import CurateResult

PROGRESS_ENV = "HARVEST_PROGRESS"
EVERY = 5.0  # seconds between lines off a terminal, unless every batch is asked for


class CurateProgress:
    def __init__(
        self,
        source: str,
        live: bool,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = 0.0,
    ):
        """``live``: a rich bar (``stream`` must be a terminal, or rich is told it is one);
        otherwise a line a batch on ``stream`` (default stderr)."""
        self.source, self.live = source, live
        self.stream = stream or sys.stderr
        self.clock = clock
        self.total = 0
        self.started = clock()
        # seconds between plain lines at least; a curate done within them prints none
        self.every, self.last = every, clock()
        self.held: str | None = None  # the last count, not yet printed
        self.lines = 0
        self.bar: Any = None

    @classmethod
    def from_env(cls, source: str) -> CurateProgress | None:
        mode = os.environ.get(PROGRESS_ENV, "auto").lower()
        if mode in ("false", "0", "no", "off", ""):
            return None
        if mode == "auto":
            tty = sys.stderr.isatty()
            return cls(source, live=tty, every=0.0 if tty else EVERY)
        return cls(source, live=sys.stderr.isatty())

    def counts(self, done: CurateResult) -> dict[str, int]:
        return {
            "checked": done.rows_in,
            "deduplicated": done.duplicates_dropped + done.near_duplicates_dropped,
            "committed": done.curated,
            "quarantined": done.quarantined,
        }

    def rate(self, done: CurateResult) -> float:
        return done.rows_in / max(self.clock() - self.started, 1e-9)

    def start(self, total: int) -> None:
        """``total``: the raw rows waiting to be curated."""
        self.total, self.started = total, self.clock()
        self.last = -math.inf if self.every == 0 else self.started
        if not self.live:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=Console(file=self.stream, force_terminal=True),
            transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task(f"curate {self.source}", total=total or None, counts="")

    def update(self, done: CurateResult) -> None:
        counts = self.counts(done)
        text = " ".join(f"{k}={v:,}" for k, v in counts.items())
        text += f" rows/s={self.rate(done):,.0f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=done.rows_in, counts=text)
            return
        of = f"/{self.total:,}" if self.total else ""
        self.held = f"curate {self.source}: {text} ({done.rows_in:,}{of} rows)"
        if self.clock() - self.last >= self.every:
            self.last = self.clock()
            self.say()

    def say(self) -> None:
        print(self.held, file=self.stream, flush=True)
        self.held = None
        self.lines += 1

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.held is not None and self.lines:  # the last count, after the first lines
            self.say()
