"""A crawl started from the command line, in the service's run history (trigger ``cli``).

``harvest crawl`` records itself beside the lake whether a service runs there or not, so
``GET /runs`` and the dashboard show every crawl of a source. A step of a service's run is
recorded by the service already (it names the run in ``HARVEST_RUN_ID``) and records
nothing more. The history is a record, not a part of the crawl: a store that cannot be
written is logged and the crawl goes on.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from types import TracebackType
from typing import Any

from harvest.config import Config
from harvest.service.runner import RUN_ID_ENV, crawl_counts
from harvest.service.runs import CLI, RunStore, store_path
from ingestion.runs import FAILED, FINISHED, INTERRUPTED

log = logging.getLogger(__name__)


class CliRun:
    """``with CliRun(config, source) as run``: ``run.start()`` once the crawl holds its
    source, ``run.summary = ...`` with what it printed; the run ends as the block does."""

    def __init__(self, config: Config, source: str):
        self.config = config
        self.source = source
        self.summary: dict[str, Any] | None = None
        self.run_id: int | None = None
        self.store: RunStore | None = None

    def start(self) -> None:
        if os.environ.get(RUN_ID_ENV):
            return
        try:
            self.store = RunStore(store_path(self.config))
            self.run_id = self.store.record(self.source, CLI, os.getpid())["id"]
        except (OSError, sqlite3.Error) as exc:
            log.warning("the crawl is not recorded in the run history: %s", exc)

    def __enter__(self) -> CliRun:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.store is None or self.run_id is None:
            return
        summary = self.summary or {}
        status, error = FINISHED, None
        if isinstance(exc, KeyboardInterrupt) or summary.get("finish_reason") == "shutdown":
            status, error = INTERRUPTED, "stopped by a signal"
        elif exc is not None and not (isinstance(exc, SystemExit) and not exc.code):
            status, error = FAILED, f"{type(exc).__name__}: {exc}"[:500]
        try:
            if isinstance(summary.get("report"), str):
                self.store.set_report(self.run_id, summary["report"])
            self.store.ended(self.run_id, status, crawl_counts(summary), error)
        except (OSError, sqlite3.Error) as exc_:
            log.warning("the end of run %s is not recorded: %s", self.run_id, exc_)
