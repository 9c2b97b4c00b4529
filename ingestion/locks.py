"""One writer per source and stage: a lock file beside the lake.

``flock`` on ``<lake>/_locks/<stage>-<source>.lock``. The kernel drops the lock when its
holder exits, SIGKILL included, so a lock never outlives its process and there is nothing
stale to clean up. The file holds the holder's pid, host, command, start and a heartbeat
refreshed every ``HEARTBEAT`` seconds: a refusal names who holds the lock, and says so
when the holder has stopped beating (hung, or stopped with SIGSTOP).

An object-store lake keeps its locks in a local folder (``HARVEST_LOCKS``, or one under
``~/.cache/harvest/locks`` per lake URI): they order the processes of one machine only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from ingestion.errors import LockedError

HEARTBEAT = 5.0  # seconds between the holder's beats
STALE = 6 * HEARTBEAT  # a holder silent this long is probably hung
LOCKS_ENV = "HARVEST_LOCKS"


class BusyError(LockedError):
    """Another process holds the lock: try again once it has finished."""

    hint = "retry once it has finished"

    def __init__(self, stage: str, source: str, holder: Holder | None):
        self.stage, self.source, self.holder = stage, source, holder
        super().__init__(f"{stage} of {source} is already running{describe(holder)}")


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    command: str
    started_at: str
    heartbeat_at: float  # Unix time of the last beat

    def silent_for(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat_at


def describe(holder: Holder | None) -> str:
    if holder is None:
        return ""
    text = f" (pid {holder.pid} on {holder.host} since {holder.started_at}: {holder.command})"
    silent = holder.silent_for()
    if silent > STALE:
        text += f"; it has not beaten for {silent:.0f} s: if it is hung, kill it to go on"
    return text


def lock_dir(lake_root: str) -> Path:
    if os.environ.get(LOCKS_ENV):
        return Path(os.environ[LOCKS_ENV])
    if "://" not in lake_root:
        return Path(lake_root) / "_locks"
    digest = hashlib.sha256(lake_root.encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "harvest" / "locks" / digest


def lock_path(lake_root: str, stage: str, source: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{stage}-{source}")
    return lock_dir(lake_root) / f"{safe}.lock"


class SourceLock:
    """Held while a ``stage`` (crawl, curate) of ``source`` writes; ``BusyError`` at once
    when another process holds it."""

    def __init__(self, lake_root: str, stage: str, source: str, command: str | None = None):
        self.stage, self.source = stage, source
        self.path = lock_path(str(lake_root), stage, source)
        self.command = command or " ".join(["harvest", *sys.argv[1:]])[:200]
        self._fd: int | None = None
        self._holder: Holder | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> SourceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BusyError(self.stage, self.source, read_holder(self.path)) from None
        self._fd = fd
        started = datetime.now(UTC).isoformat(timespec="seconds")
        self._holder = Holder(os.getpid(), socket.gethostname(), self.command, started, 0.0)
        self._write()
        self._stop.clear()
        self._beat = threading.Thread(target=self._beating, name="lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=HEARTBEAT)
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock

    def _beating(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            with contextlib.suppress(OSError):
                self._write()

    def _write(self) -> None:
        fd, mine = self._fd, self._holder
        if fd is None or mine is None:
            return
        holder = Holder(**{**asdict(mine), "heartbeat_at": time.time()})
        data = json.dumps(asdict(holder)).encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def __enter__(self) -> SourceLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def read_holder(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # gone, or caught between a truncate and a write


def holder(lake_root: str, stage: str, source: str) -> Holder | None:
    """Who holds the lock now, or None when it is free (taken and dropped to find out)."""
    path = lock_path(str(lake_root), stage, source)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        found = read_holder(path)
        # held, but by a process that has not written yet: say so without details
        return found or Holder(0, "?", "?", "?", time.time())
    finally:
        os.close(fd)
    return None
