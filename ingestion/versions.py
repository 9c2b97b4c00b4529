"""Table history, compaction, and a vacuum that keeps every version something still names."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingestion import deltalog
from ingestion.datasets import dataset_versions
from ingestion.lake import KEEP_LOG, LINEAGE_KEY, MOVES_NO_ROWS, Lake, LakeError
from ingestion.runs import CURATE_STAGE, last_run
from ingestion.runs import TABLE as RUNS

DEFAULT_RETAIN_HOURS = 168  # Delta's own default, one week


@dataclass
class Commit:
    version: int
    time: datetime
    operation: str
    rows_added: int | None
    crawl_id: str | None
    lineage: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "time": self.time.isoformat(),
            "operation": self.operation,
            "rows_added": self.rows_added,
            "crawl_id": self.crawl_id,
            "lineage": self.lineage,
        }


def history(lake: Lake, table: str, limit: int | None = None) -> list[Commit]:
    """The commits of ``table``, newest first."""
    out = []
    for entry in lake.table(table).history(limit):
        lineage = dict(json.loads(entry[LINEAGE_KEY])) if LINEAGE_KEY in entry else {}
        operation = str(entry.get("operation", "?"))
        mode = (entry.get("operationParameters") or {}).get("mode")
        if mode:
            operation = f"{operation} {str(mode).lower()}"
        out.append(
            Commit(
                version=int(entry["version"]),
                time=datetime.fromtimestamp(entry["timestamp"] / 1000, UTC),
                operation=operation,
                rows_added=_rows_added(entry),
                crawl_id=lineage.get("crawl_id"),
                lineage=lineage,
            )
        )
    return out


def _rows_added(entry: dict[str, Any]) -> int | None:
    metrics = entry.get("operationMetrics") or {}
    for key in ("num_added_rows", "num_target_rows_inserted", "num_copied_rows"):
        if key in metrics:
            return int(metrics[key])
    if entry.get("operation") in MOVES_NO_ROWS:
        return 0
    return None


@dataclass(frozen=True)
class Pin:
    """A version of a table that must stay readable, and who needs it."""

    table: str
    version: int
    reason: str


def pinned_versions(lake: Lake) -> list[Pin]:
    """Every dataset version still in a dataset's log, the input versions each names, and
    the raw versions holding rows the gate has not read yet (it reads them from the files they
    were appended in, which a compaction retires)."""
    pins: list[Pin] = []
    for table in lake.tables():
        if not table.startswith("datasets/"):
            continue
        name = table.split("/", 1)[1]
        for version, lineage in dataset_versions(lake, name):
            why = f"dataset {name} version {version}"
            pins.append(Pin(table, version, why))
            pins += [Pin(t, int(v), why) for t, v in lineage.get("tables", {}).items()]
    if lake.exists(RUNS):
        sources = set(lake.read(RUNS, columns=["source"])["source"].to_pylist())
        for source in sorted(s for s in sources if s):
            pins += _uncurated(lake, source)
    return pins


def _uncurated(lake: Lake, source: str) -> list[Pin]:
    """Versions of ``raw/<source>`` that appended rows the gate has not read yet, where a
    compaction has since retired the files holding them."""
    table = f"raw/{source}"
    run = last_run(lake, CURATE_STAGE, source)  # the raw version the gate read up to
    if not lake.exists(table) or not run or run.get("raw_version") is None:
        return []  # the gate's first run reads the whole table, compacted or not
    since = int(run["raw_version"])
    uri = lake.uri(table)
    _, retired = deltalog.data_added_since(uri, since, lake.table(table).version())
    why = f"rows it appended are not curated yet (the gate read up to version {since})"
    return [Pin(table, v, why) for v in sorted(set(retired.values()))]


@dataclass
class VacuumResult:
    table: str
    retain_hours: int
    dry_run: bool
    removed: list[str]
    kept: list[Pin] = field(default_factory=list)  # versions whose files were kept

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "retain_hours": self.retain_hours,
            "dry_run": self.dry_run,
            "files_removed": len(self.removed),
            "kept_versions": [vars(p) for p in self.kept],
        }


def vacuum(
    lake: Lake,
    table: str,
    retain_hours: int = DEFAULT_RETAIN_HOURS,
    dry_run: bool = False,
    pins: list[Pin] | None = None,
) -> VacuumResult:
    """Deletes files that no version newer than ``retain_hours`` needs, except the files of
    pinned versions (default: ``pinned_versions``), which stay readable."""
    if retain_hours < 0:
        raise LakeError(f"vacuum of {table!r}: --retain-hours must be 0 or more")
    pins = pinned_versions(lake) if pins is None else pins
    dt = lake.table(table)
    uri = lake.uri(table)
    mine = sorted({p for p in pins if p.table == table}, key=lambda p: (p.version, p.reason))
    keep = sorted({p.version for p in mine})
    needed: set[str] = set()
    for version in keep:
        needed.update(lake.table(table, version).file_uris())

    def plan(dry: bool) -> list[str]:
        return dt.vacuum(
            retention_hours=retain_hours,
            dry_run=dry,
            enforce_retention_duration=False,
            keep_versions=keep or None,
            post_commithook_properties=KEEP_LOG,
        )

    # check the plan before deleting anything: a pinned version must never lose a file
    candidates = plan(dry=True)
    clash = sorted(needed & {deltalog.file_uri(uri, c) for c in candidates})
    if clash:
        raise LakeError(
            f"vacuum of {table!r} would delete {len(clash)} file(s) that pinned versions "
            f"{keep} need, e.g. {clash[0]}; nothing was deleted"
        )
    removed = candidates if dry_run else plan(dry=False)
    live = set(dt.file_uris())
    # report only the versions whose files vacuum would otherwise have deleted
    kept = [p for p in mine if set(lake.table(table, p.version).file_uris()) - live]
    return VacuumResult(table, retain_hours, dry_run, removed, kept)


def compact(lake: Lake, table: str) -> dict[str, Any]:
    """Rewrites small files into large ones; a new version with the same rows."""
    dt = lake.table(table)
    before = dt.version()
    metrics = dt.optimize.compact(post_commithook_properties=KEEP_LOG)
    return {
        "table": table,
        "version_before": before,
        "version": dt.version(),
        "files_removed": int(metrics.get("numFilesRemoved", 0)),
        "files_added": int(metrics.get("numFilesAdded", 0)),
    }
