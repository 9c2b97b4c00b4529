"""The service's run history: one SQLite row per run, kept beside the lake.

The store is also the per-source lock: ``claim`` inserts a queued run only when no run of
that source is queued or running, in one write transaction, so a scheduled run and a
manual trigger can never both start. A service that dies leaves its runs "running";
``interrupt_leftovers`` closes them when the next one starts.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harvest.config import Config
from ingestion.errors import LockedError
from ingestion.runs import ACTIVE, INTERRUPTED, QUEUED, RUNNING, STATUSES

TRIGGERS = ("schedule", "manual", "drift")
COUNTS = ("requests", "items", "curated", "quarantined", "bans")
# the end of a progress file read for its last line: many lines of counts
PROGRESS_TAIL = 4096

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    counts TEXT NOT NULL DEFAULT '{}',
    log_path TEXT,
    error TEXT,
    pid INTEGER
);
CREATE INDEX IF NOT EXISTS runs_source ON runs (source, id);
"""


class SourceBusyError(LockedError):
    """A run of the source is already queued or running."""

    hint = "retry once it has ended"

    def __init__(self, run: dict[str, Any]):
        self.run = run
        super().__init__(f"source {run['source']!r} is already {run['status']} (run {run['id']})")


def store_path(config: Config) -> Path:
    """``<lake parent>/service/runs.db``; ``service/runs.db`` for a lake behind a URI."""
    base = Path("service") if "://" in config.lake else Path(config.lake).parent / "service"
    return base.resolve() / "runs.db"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RunStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # a connection per call: the API, the scheduler and each run use their own threads
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    def claim(self, source: str, trigger: str) -> dict[str, Any]:
        """A new queued run of ``source``; SourceBusyError when one is queued or running."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger {trigger!r}: one of {', '.join(TRIGGERS)}")
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                busy = db.execute(
                    "SELECT * FROM runs WHERE source = ? AND status IN (?, ?) ORDER BY id LIMIT 1",
                    (source, *ACTIVE),
                ).fetchone()
                if busy is not None:
                    raise SourceBusyError(self._row(busy, progress=False))
                cur = db.execute(
                    "INSERT INTO runs (source, trigger, status, created_at) VALUES (?, ?, ?, ?)",
                    (source, trigger, QUEUED, now()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        run = self.get(int(cur.lastrowid or 0))
        assert run is not None
        return run

    def started(self, run_id: int, log_path: str | Path) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE runs SET status = ?, started_at = ?, log_path = ? WHERE id = ?",
                (RUNNING, now(), str(log_path), run_id),
            )

    def set_pid(self, run_id: int, pid: int | None) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET pid = ? WHERE id = ?", (pid, run_id))

    def ended(
        self, run_id: int, status: str, counts: dict[str, int], error: str | None = None
    ) -> None:
        if status in ACTIVE or status not in STATUSES:
            raise ValueError(f"a run ends as one of {', '.join(STATUSES[2:])}, not {status!r}")
        with self._db() as db:
            db.execute(
                "UPDATE runs SET status = ?, ended_at = ?, counts = ?, error = ?, pid = NULL "
                "WHERE id = ?",
                (status, now(), json.dumps(counts), error, run_id),
            )

    def interrupt_leftovers(self) -> list[int]:
        """Marks the runs a previous service left queued or running as interrupted."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            ids = [
                int(r["id"])
                for r in db.execute("SELECT id FROM runs WHERE status IN (?, ?)", ACTIVE)
            ]
            db.execute(
                "UPDATE runs SET status = ?, ended_at = ?, pid = NULL, "
                "error = COALESCE(error, 'the service stopped while this run was active') "
                "WHERE status IN (?, ?)",
                (INTERRUPTED, now(), *ACTIVE),
            )
            db.execute("COMMIT")
        return ids

    def get(self, run_id: int) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return self._row(row) if row is not None else None

    def list(
        self, limit: int = 50, source: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest runs first, optionally of one source and in one status."""
        where, args = [], []
        if source is not None:
            where.append("source = ?")
            args.append(source)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._db() as db:
            rows = db.execute(sql, (*args, max(0, int(limit)))).fetchall()
        return [self._row(r) for r in rows]

    def active(self) -> builtins.list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM runs WHERE status IN (?, ?)", ACTIVE).fetchall()
        return [self._row(r, progress=False) for r in rows]

    def _row(self, row: sqlite3.Row, progress: bool = True) -> dict[str, Any]:
        counts = {k: None for k in COUNTS} | json.loads(row["counts"] or "{}")
        out = {
            "id": int(row["id"]),
            "source": row["source"],
            "trigger": row["trigger"],
            "status": row["status"],
            "created_at": row["created_at"],
            "started_at": row["started_at"],
            "ended_at": row["ended_at"],
            "counts": counts,
            "log_path": row["log_path"],
            "error": row["error"],
            "pid": row["pid"],
            "progress": None,
        }
        if progress and row["status"] == RUNNING and row["log_path"]:
            out["progress"] = read_progress(progress_path(Path(row["log_path"])))
        return out


def progress_path(log: Path) -> Path:
    """Where a run's crawl appends its counts (``harvest crawl --progress-file``), beside
    the run's log: ``<id>.progress.jsonl``."""
    return log.with_suffix(".progress.jsonl")


def read_progress(path: Path) -> dict[str, int] | None:
    """The latest counts of a crawl's progress file (pages, items, committed, errors)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - PROGRESS_TAIL))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):  # the last line may be half written, the first cut short
        try:
            counts = json.loads(line)
        except ValueError:
            continue
        if isinstance(counts, dict) and all(type(v) is int for v in counts.values()):
            return counts
    return None


def open_history(config: Config) -> RunStore | None:
    """The service's run history, or None when no service has run beside this lake."""
    path = store_path(config)
    return RunStore(path) if path.exists() else None
