"""Schedules reloaded when a recipe file changes: no restart for a new cron.

The recipes' folder is polled (each file's modification time and size) every ``every``
seconds, and looked at once more before the schedules are shown, so ``GET /sources``
never pairs a recipe's new cron with the next run time of its old one. Any change
re-syncs the scheduler's jobs with the recipes: an added file is scheduled, a removed one
unscheduled, a changed cron rescheduled from now.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from harvest.recipe import list_recipes

log = logging.getLogger(__name__)
EVERY = 2.0  # seconds between looks
LOCK_WAIT = 30.0  # seconds a look waits for another one to finish

Snapshot = dict[Path, tuple[int, int]]


def snapshot(folder: str | Path) -> Snapshot:
    out: Snapshot = {}
    for path in list_recipes(folder):
        try:
            stat = path.stat()
        except OSError:  # removed between the listing and the look
            continue
        out[path] = (stat.st_mtime_ns, stat.st_size)
    return out


class RecipeWatch:
    """Calls ``sync`` whenever the recipe files in ``folder`` have changed."""

    def __init__(self, folder: str | Path, sync: Callable[[], None], every: float = EVERY):
        self.folder = folder
        self.sync = sync
        self.every = every
        self._seen: Snapshot | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Takes the recipes as they are now (the scheduler has just synced) and polls."""
        self._seen = snapshot(self.folder)
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="recipe-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LOCK_WAIT)

    def check(self) -> bool:
        """Syncs if a recipe changed since the last look; whether it did."""
        if not self._lock.acquire(timeout=LOCK_WAIT):
            log.warning("recipes not looked at: another look has held the lock %g s", LOCK_WAIT)
            return False
        try:
            now = snapshot(self.folder)
            if now == self._seen:
                return False
            changed = sorted(
                p.name
                for p in set(now) | set(self._seen or {})
                if now.get(p) != (self._seen or {}).get(p)
            )
            log.info("recipes changed: %s; schedules synced", ", ".join(changed))
            self.sync()
            self._seen = now
            return True
        finally:
            self._lock.release()

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.check()
            except Exception:  # a bad moment on disk must not end the watch
                log.exception("looking at the recipes failed")
