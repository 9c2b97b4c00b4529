"""Progress of long work that is not a crawl or a curate (sentence encoding, an export's
files, a report's folds): a bar on a terminal, elsewhere a line on stderr every few
seconds, so that nothing runs for minutes in silence.

``HARVEST_PROGRESS`` false turns it off; under ``HARVEST_LOG_FORMAT=json`` each line is a
JSON record like the logs'. Work done within the first interval prints nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any

EVERY = 5.0  # seconds between lines off a terminal


class Ticker:
    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str = "rows",
        every: float = EVERY,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.stream = stream or sys.stderr
        self.clock = clock
        self.done = 0
        self.started = self.last = clock()
        self.lines = 0
        mode = os.environ.get("HARVEST_PROGRESS", "auto").lower()
        self.off = mode in ("false", "0", "no", "off")
        self.bar: Any = None
        if not self.off and self.stream.isatty():
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(file=self.stream), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(what, total=total)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, advance=n)
        elif not self.off and self.clock() - self.last >= self.every:
            self.line()

    def line(self) -> None:
        self.last = self.clock()
        seconds = max(self.last - self.started, 1e-9)
        of = f"/{self.total:,}" if self.total is not None else ""
        text = f"{self.what}: {self.done:,}{of} {self.unit}, {self.done / seconds:,.0f}/s"
        if os.environ.get("HARVEST_LOG_FORMAT", "").lower() == "json":
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            record = {"time": now, "level": "info", "logger": "harvest.progress"}
            text = json.dumps({**record, "message": text})
        print(text, file=self.stream, flush=True)
        self.lines += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.lines:  # the last count, when the first lines told of the work
            self.line()

    def __enter__(self) -> Ticker:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
