"""The service's run history: one SQLite row per run, kept beside the lake.

The store is also the per-source lock: ``claim`` inserts a queued run only when no run of
that source is queued or running, in one write transaction, so a scheduled run and a
manual trigger can never both start. A service that dies leaves its runs "running";
``interrupt_leftovers`` closes them when the next one starts.

A crawl started from the command line is recorded here too (trigger ``cli``, see
``harvest.service.clirun``). Its process is not the service's: a service starting leaves it
running, and it is closed as interrupted only once its process is gone.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harvest.config import Config
from ingestion.errors import LockedError
from ingestion.runs import ACTIVE, INTERRUPTED, QUEUED, RUNNING
from ingestion.runs import STATUSES as STAGE_STATUSES

CLI = "cli"  # the trigger of a crawl started from the command line
TRIGGERS = ("schedule", "manual", "drift", CLI)
CANCELLED = "cancelled"  # ended by POST /runs/{id}/cancel
STATUSES = (*STAGE_STATUSES, CANCELLED)
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
    pid INTEGER,
    attempt INTEGER NOT NULL DEFAULT 1,
    retry_of INTEGER,
    report TEXT
);
CREATE INDEX IF NOT EXISTS runs_source ON runs (source, id);
"""
# columns added since the first history was written, with their definitions
ADDED = {
    "attempt": "INTEGER NOT NULL DEFAULT 1",
    "retry_of": "INTEGER",
    "report": "TEXT",
}


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
            have = {r["name"] for r in db.execute("PRAGMA table_info(runs)")}
            for column, kind in ADDED.items():
                if column not in have:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # a connection per call: the API, the scheduler and each run use their own threads
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    def claim(
        self, source: str, trigger: str, attempt: int = 1, retry_of: int | None = None
    ) -> dict[str, Any]:
        """A new queued run of ``source``; SourceBusyError when one is queued or running.
        ``attempt`` counts the tries of one scheduled run, ``retry_of`` names its first."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger {trigger!r}: one of {', '.join(TRIGGERS)}")
        self.close_dead_cli_runs()
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
                    "INSERT INTO runs (source, trigger, status, created_at, attempt, retry_of) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (source, trigger, QUEUED, now(), attempt, retry_of),
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

    def record(self, source: str, trigger: str, pid: int) -> dict[str, Any]:
        """A run already running in process ``pid`` (a command-line crawl, which holds the
        source's lock itself), recorded without the queue's busy check."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger {trigger!r}: one of {', '.join(TRIGGERS)}")
        stamp = now()
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO runs (source, trigger, status, created_at, started_at, pid) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (source, trigger, RUNNING, stamp, stamp, pid),
            )
        run = self.get(int(cur.lastrowid or 0))
        assert run is not None
        return run

    def set_pid(self, run_id: int, pid: int | None) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET pid = ? WHERE id = ?", (pid, run_id))

    def set_report(self, run_id: int, report: str | None) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET report = ? WHERE id = ?", (report, run_id))

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
        """Marks the runs a previous service left queued or running as interrupted; a
        command-line crawl's run only once its process is gone."""
        self.close_dead_cli_runs()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            ids = [
                int(r["id"])
                for r in db.execute(
                    "SELECT id FROM runs WHERE status IN (?, ?) AND trigger != ?", (*ACTIVE, CLI)
                )
            ]
            db.execute(
                "UPDATE runs SET status = ?, ended_at = ?, pid = NULL, "
                "error = COALESCE(error, 'the service stopped while this run was active') "
                "WHERE status IN (?, ?) AND trigger != ?",
                (INTERRUPTED, now(), *ACTIVE, CLI),
            )
            db.execute("COMMIT")
        return ids

    def close_dead_cli_runs(self) -> list[int]:
        """Closes as interrupted the command-line runs whose process is gone without
        recording its end (killed outright)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT id, pid FROM runs WHERE status IN (?, ?) AND trigger = ?", (*ACTIVE, CLI)
            ).fetchall()
            dead = [int(r["id"]) for r in rows if not _alive(r["pid"])]
            for run_id in dead:
                db.execute(
                    "UPDATE runs SET status = ?, ended_at = ?, pid = NULL, error = ? "
                    "WHERE id = ? AND status IN (?, ?)",
                    (INTERRUPTED, now(), "the crawl's process ended unrecorded", run_id, *ACTIVE),
                )
        return dead

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
            "attempt": int(row["attempt"]),
            "retry_of": row["retry_of"],
            "report": row["report"],
        }
        if progress and row["status"] == RUNNING and row["log_path"]:
            out["progress"] = read_progress(progress_path(Path(row["log_path"])))
        return out


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has ended: its parent just has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


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
