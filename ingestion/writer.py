"""Buffers rows and commits them to a Delta table in whole batches."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ingestion.lake import Lake
from ingestion.schema import PROVENANCE


class BatchWriter:
    """Each ``flush`` is one Delta commit: a batch lands whole or not at all.

    Rows come one at a time (a crawl's items) or as Arrow tables (bulk loads); both are
    buffered until ``batch_size`` rows are held. A Delta commit has a fixed cost of tens
    of milliseconds, so bulk loads want batches of many thousand rows, while a crawl's
    small batches bound what a killed crawl has to fetch again.
    """

    def __init__(
        self,
        lake: Lake,
        table: str,
        batch_size: int = 100,
        field_types: dict[str, pa.DataType] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self.lake = lake
        self.table = table
        self.batch_size = batch_size
        self.metadata = metadata  # written with every commit, e.g. the crawl id
        self.schema = _schema(field_types or {})
        self.buffer: list[dict[str, Any]] = []
        self.tables: list[pa.Table] = []
        self.buffered = 0
        self.rows_committed = 0
        self.batches_committed = 0

    def add(self, row: dict[str, Any]) -> bool:
        """Buffer a row; returns True when this call committed a batch."""
        self.buffer.append(row)
        self.buffered += 1
        return self._commit_when_full()

    def add_table(self, table: pa.Table) -> bool:
        """Buffer an Arrow table of rows; returns True when this call committed a batch."""
        if table.num_rows:
            self.tables.append(table)
            self.buffered += table.num_rows
        return self._commit_when_full()

    def _commit_when_full(self) -> bool:
        if self.buffered >= self.batch_size:
            self.flush()
            return True
        return False

    def flush(self) -> int | None:
        if not self.buffered:
            return None
        parts = list(self.tables)
        if self.buffer:
            parts.append(self._from_rows())
        batch = parts[0]
        if len(parts) > 1:
            batch = pa.concat_tables(parts, promote_options="permissive")
        version = self.lake.append(self.table, batch, self.metadata)
        self.rows_committed += self.buffered
        self.batches_committed += 1
        self.buffer, self.tables, self.buffered = [], [], 0
        return version

    def _from_rows(self) -> pa.Table:
        schema = self.schema
        extra = sorted({k for row in self.buffer for k in row} - set(schema.names))
        for name in extra:
            schema = schema.append(pa.field(name, pa.string()))
        return pa.Table.from_pylist(self.buffer, schema=schema)


def _schema(field_types: dict[str, pa.DataType]) -> pa.Schema:
    schema = PROVENANCE
    for name, dtype in field_types.items():
        if name not in schema.names:
            schema = schema.append(pa.field(name, dtype))
    return schema
