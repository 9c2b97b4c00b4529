"""An API crawl's rows to ``raw/<source>``: whole pages, committed off the event loop.

A Delta commit costs tens of milliseconds, about what a page of an API takes to come
back: committed on the event loop, every batch would hold up every request in flight. So
a batch is committed in a worker thread while pages keep coming, one commit at a time;
the rows that arrive meanwhile go into the next, which may then be larger than the batch
size. Commits are also at least ``SPACING`` seconds apart: an API that answers thousands
of records a second would otherwise spend more on commits than on fetching, and a kill
loses at most that much fetching. Each commit holds whole pages, in order, and the
position after its last one (``api_position`` in its metadata), which a resumed crawl
starts from.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pyarrow as pa

from ingestion.lake import Lake
from ingestion.writer import BatchWriter
from spiders.apipaging import Position

POSITION_KEY = "api_position"
SPACING = 1.0  # seconds between the starts of two commits, at least


class PageCommits:
    def __init__(
        self,
        lake: Lake,
        table: str,
        field_types: dict[str, pa.DataType],
        crawl_id: str,
        batch_size: int,
    ):
        self.lake, self.table, self.field_types = lake, table, field_types
        self.crawl_id, self.batch_size = crawl_id, batch_size
        self.pending: list[dict[str, Any]] = []
        self.after: Position = None  # the position after the last page pending
        self.committing: asyncio.Task[int] | None = None
        self.rows_committed = 0
        self.batches_committed = 0
        self.started = -math.inf  # when the last commit started

    def add(self, rows: list[dict[str, Any]], after: Position) -> None:
        """A whole page's rows, and the position after that page."""
        self.pending.extend(rows)
        self.after = after

    async def step(self) -> None:
        """Starts a commit when a batch is pending and none is under way."""
        if self.committing is not None:
            if not self.committing.done():
                return
            self._done(self.committing)
        if len(self.pending) >= self.batch_size and time.monotonic() - self.started >= SPACING:
            self._start()

    async def close(self) -> None:
        """Waits for the commit under way, then commits what is pending."""
        if self.committing is not None:
            await asyncio.wait([self.committing])
            self._done(self.committing)
        if self.pending:
            self._start()
            assert self.committing is not None
            await asyncio.wait([self.committing])
            self._done(self.committing)

    def _start(self) -> None:
        rows, after = self.pending, self.after
        self.pending = []
        self.started = time.monotonic()
        self.committing = asyncio.create_task(asyncio.to_thread(self._commit, rows, after))

    def _done(self, task: asyncio.Task[int]) -> None:
        self.committing = None
        self.rows_committed += task.result()  # a failed commit fails the crawl
        self.batches_committed += 1

    def _commit(self, rows: list[dict[str, Any]], after: Position) -> int:
        metadata = {"crawl_id": self.crawl_id, POSITION_KEY: json.dumps(after)}
        writer = BatchWriter(
            self.lake, self.table, len(rows) + 1, self.field_types, metadata=metadata
        )
        for row in rows:
            writer.add(row)
        writer.flush()
        return len(rows)
