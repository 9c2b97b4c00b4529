"""The ``runs`` table: one row per stage run, so a stage knows where it left off."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingestion.lake import Lake

TABLE = "runs"
# the stages that record where they left off: a crawl its id and state, the gate the raw
# version it has read up to
CRAWL_STAGE, CURATE_STAGE = "crawl", "curate"
# the states of a run: a crawl's in this table (running, then finished or interrupted),
# and a service run's in its history (harvest/service/runs.py), which adds the others
QUEUED, RUNNING, FINISHED, FAILED = "queued", "running", "finished", "failed"
INTERRUPTED, TIMED_OUT = "interrupted", "timed_out"
STATUSES = (QUEUED, RUNNING, FINISHED, FAILED, INTERRUPTED, TIMED_OUT)
ACTIVE = (QUEUED, RUNNING)  # a run in one of these holds its source
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


def runs_of(lake: Lake, stage: str, source: str) -> list[dict[str, Any]]:
    """Every run of ``stage`` for ``source``, oldest first: when (``at``) and its details."""
    return [{"at": row["at"], **json.loads(row["details"])} for row in _rows(lake, stage, source)]


def last_run(lake: Lake, stage: str, source: str) -> dict[str, Any] | None:
    """The details of the latest run of ``stage`` for ``source``."""
    mine = _rows(lake, stage, source)
    return dict(json.loads(mine[-1]["details"])) if mine else None


def _rows(lake: Lake, stage: str, source: str) -> list[dict[str, Any]]:
    if not lake.exists(TABLE):
        return []
    runs = lake.read(TABLE)
    mask = pc.and_(pc.equal(runs["stage"], stage), pc.equal(runs["source"], source))
    return list(runs.filter(mask).sort_by("at").to_pylist())
