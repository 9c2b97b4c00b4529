"""Buffers rows and commits them to a Delta table in whole batches."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ingestion.lake import Lake
from ingestion.schema import PROVENANCE


class BatchWriter:
    """Each ``flush`` is one Delta commit: a batch lands whole or not at all."""

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
        self.rows_committed = 0
        self.batches_committed = 0

    def add(self, row: dict[str, Any]) -> bool:
        """Buffer a row; returns True when this call committed a batch."""
        self.buffer.append(row)
        if len(self.buffer) >= self.batch_size:
            self.flush()
            return True
        return False

    def flush(self) -> int | None:
        if not self.buffer:
            return None
        schema = self.schema
        extra = sorted({k for row in self.buffer for k in row} - set(schema.names))
        for name in extra:
            schema = schema.append(pa.field(name, pa.string()))
        batch = pa.Table.from_pylist(self.buffer, schema=schema)
        version = self.lake.append(self.table, batch, self.metadata)
        self.rows_committed += len(self.buffer)
        self.batches_committed += 1
        self.buffer = []
        return version


def _schema(field_types: dict[str, pa.DataType]) -> pa.Schema:
    schema = PROVENANCE
    for name, dtype in field_types.items():
        if name not in schema.names:
            schema = schema.append(pa.field(name, dtype))
    return schema
