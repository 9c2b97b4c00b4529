"""The ``runs`` table: one row per stage run, so a stage knows where it left off."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingestion.lake import Lake

TABLE = "runs"
SCHEMA = pa.schema(
    [
        ("stage", pa.string()),
        ("source", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("details", pa.string()),
    ]
)


def record_run(lake: Lake, stage: str, source: str, details: dict[str, Any]) -> None:
    row = {
        "stage": stage,
        "source": source,
        "at": datetime.now(UTC),
        "details": json.dumps(details),
    }
    lake.append(TABLE, pa.Table.from_pylist([row], schema=SCHEMA))


def last_run(lake: Lake, stage: str, source: str) -> dict[str, Any] | None:
    if not lake.exists(TABLE):
        return None
    runs = lake.read(TABLE)
    mask = pc.and_(pc.equal(runs["stage"], stage), pc.equal(runs["source"], source))
    mine = runs.filter(mask)
    if mine.num_rows == 0:
        return None
    latest = mine.sort_by([("at", "descending")]).slice(0, 1).to_pylist()[0]
    return dict(json.loads(latest["details"]))
