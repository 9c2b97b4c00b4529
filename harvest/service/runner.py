"""Runs a source's job: each step a ``harvest`` command in its own process group.

A run is the crawl (which curates), then, when the recipe's schedule says so, a label push
and a retrain. Every step writes to the run's log (``<reports>/runs/<id>.log``); the whole
run has the schedule's time limit, past which its process group is killed. A crash of a
step fails the run, never the service. A cancelled run (``harvest.service.cancel``) stops
before its next step, or ends the step running. Whoever listens (``on_end``: the failure
notice) hears of every run that ended.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harvest.config import Config
from harvest.recipe import Recipe, load_recipe
from harvest.service.cancel import Cancels
from harvest.service.runs import CANCELLED, COUNTS, RunStore, progress_path
from ingestion.errors import UnavailableError
from ingestion.locks import BusyError, holder
from ingestion.runs import CRAWL_STAGE, FAILED, FINISHED, INTERRUPTED, TIMED_OUT
from spiders.schedule import DEFAULT_TIME_LIMIT
from training.registry import model_name

log = logging.getLogger(__name__)
DRIFT = "drift"  # the trigger of a run queued because a model's live inputs drifted
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when a run is out of time
# a step knows it runs for the service, and which run it is: a crawl then leaves the
# recording to the service (harvest.service.clirun)
RUN_ID_ENV = "HARVEST_RUN_ID"


class StoppingError(UnavailableError):
    pass


class Runner:
    def __init__(
        self,
        config: Config,
        store: RunStore,
        time_limit: float = DEFAULT_TIME_LIMIT,
        stop_grace: float = 30.0,
    ):
        self.config = config
        self.store = store
        self.time_limit = time_limit  # for sources whose recipe has no schedule
        self.stop_grace = stop_grace
        self.stopping = threading.Event()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._done: dict[int, threading.Event] = {}  # set once a run is recorded as ended
        self._lock = threading.Lock()
        self.cancels = Cancels()
        self.on_end: list[Callable[[dict[str, Any]], None]] = []

    def trigger(self, source: str, trigger: str = "manual") -> dict[str, Any]:
        """Queues a run of ``source`` and starts it in a thread; SourceBusyError when one
        is active, BusyError when a crawl outside the service holds the source's lock."""
        if self.stopping.is_set():
            raise StoppingError("the service is stopping: no new runs")
        self.check_lock(source)
        run = self.store.claim(source, trigger)
        with self._lock:
            self._done[run["id"]] = threading.Event()
        self.cancels.watch(run["id"])
        threading.Thread(
            target=self.execute,
            args=(run["id"], source, trigger),
            name=f"run-{run['id']}",
            daemon=True,
        ).start()
        return run

    def run(
        self, source: str, trigger: str = "schedule", attempt: int = 1, retry_of: int | None = None
    ) -> dict[str, Any] | None:
        """Claims and runs ``source`` in this thread (the scheduler's); the finished run."""
        if self.stopping.is_set():
            return None
        self.check_lock(source)
        run = self.store.claim(source, trigger, attempt, retry_of)
        with self._lock:
            self._done[run["id"]] = threading.Event()
        self.cancels.watch(run["id"])
        self.execute(run["id"], source, trigger)
        return self.store.get(run["id"])

    def cancel(self, run_id: int, wait: float) -> bool:
        """Asks run ``run_id`` to stop and waits up to ``wait`` seconds for it to end; False
        when it is not one of this service's active runs."""
        with self._lock:
            done = self._done.get(run_id)
        if done is None or not self.cancels.request(run_id):
            return False
        done.wait(wait)
        return True

    def check_lock(self, source: str) -> None:
        """Refuses at once when a crawl started elsewhere (the CLI) holds the lock; one
        that takes it between this look and the run's own crawl fails the run as busy."""
        held = holder(self.config.lake, CRAWL_STAGE, source)
        with self._lock:
            ours = {proc.pid for proc in self._procs.values()}
        if held is not None and held.pid not in ours:  # our own runs: the store says busy
            raise BusyError(CRAWL_STAGE, source, held)

    def execute(self, run_id: int, source: str, trigger: str = "schedule") -> None:
        logs = Path(self.config.reports) / "runs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = (logs / f"{run_id}.log").resolve()
        self.store.started(run_id, log_path)
        counts: dict[str, int] = {}
        try:
            recipe = load_recipe(source, self.config.sources)
            limit = recipe.schedule.time_limit if recipe.schedule else self.time_limit
            deadline = time.monotonic() + limit
            status, error = FINISHED, None
            for step in steps(recipe, source, progress_path(log_path), trigger):
                if self.stopping.is_set():
                    status, error = INTERRUPTED, f"the service stopped before {step[0]}"
                    break
                if self.cancels.requested(run_id):
                    status, error = CANCELLED, f"cancelled before {step[0]}"
                    break
                status, error, summary = self._step(run_id, step, log_path, deadline, limit)
                if step[0] == "crawl" and summary is not None:
                    counts = crawl_counts(summary)
                    if isinstance(summary.get("report"), str):
                        self.store.set_report(run_id, summary["report"])
                if status != FINISHED:
                    break
        except Exception as exc:  # an unreadable recipe, a log that cannot be written
            log.exception("run %s of %s failed to run", run_id, source)
            status, error = FAILED, f"{type(exc).__name__}: {exc}"
        try:
            self.store.ended(run_id, status, counts, error)
        finally:
            self.cancels.forget(run_id)
            with self._lock:
                done = self._done.pop(run_id, None)
            if done is not None:
                done.set()
        log.info(
            "run %s of %s %s",
            run_id,
            source,
            status,
            extra={"run_id": run_id, "source": source, "status": status, "counts": counts},
        )
        self._ended(run_id)

    def _ended(self, run_id: int) -> None:
        run = self.store.get(run_id)
        if run is None:
            return
        for listener in self.on_end:
            try:
                listener(run)
            except Exception:  # a listener's fault is its own, never the run's
                log.exception("a listener of run %s failed", run_id)

    def _step(
        self, run_id: int, cmd: list[str], log_path: Path, deadline: float, limit: float
    ) -> tuple[str, str | None, dict[str, Any] | None]:
        """One command of a run: (status, error, the JSON summary it printed last)."""
        with log_path.open("ab") as out:
            start = out.tell()
            out.write(f"$ harvest {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "harvest.cli", *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", RUN_ID_ENV: str(run_id)},
                start_new_session=True,  # its own process group, killed as one
            )
        with self._lock:
            self._procs[run_id] = proc
        self.store.set_pid(run_id, proc.pid)
        status = FINISHED
        try:
            while True:
                try:
                    proc.wait(timeout=0.25)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if self.stopping.is_set():
                    # Scrapy stops gracefully on the first SIGINT: the crawl stays resumable
                    status = INTERRUPTED
                    _signal(proc, signal.SIGINT)
                    _wait_or_kill(proc, self.stop_grace)
                    break
                if time.monotonic() > deadline:
                    status = TIMED_OUT
                    _signal(proc, signal.SIGTERM)
                    _wait_or_kill(proc, KILL_GRACE)
                    break
                if self.cancels.requested(run_id):
                    # a crawl commits what it holds on SIGTERM; the grace bounds that
                    status = CANCELLED
                    _signal(proc, signal.SIGTERM)
                    _wait_or_kill(proc, self.stop_grace)
                    break
        finally:
            with self._lock:
                self._procs.pop(run_id, None)
        text = _read_from(log_path, start)
        summary = last_summary(text)
        if status == TIMED_OUT:
            return (
                status,
                f"{cmd[0]} ran past the time limit of {limit:g} s and was killed",
                summary,
            )
        if status == INTERRUPTED:
            return status, f"the service stopped during {cmd[0]}", summary
        if status == CANCELLED:
            return status, f"cancelled during {cmd[0]}", summary
        if proc.returncode != 0:
            return FAILED, f"{cmd[0]} exited with {proc.returncode}: {last_error(text)}", summary
        return status, None, summary

    def stop(self) -> None:
        """Stops every run: each step gets SIGINT and ``stop_grace`` seconds to finish."""
        self.stopping.set()
        with self._lock:
            waiting = list(self._done.values())
        deadline = time.monotonic() + self.stop_grace + KILL_GRACE + 5
        for done in waiting:
            done.wait(max(0.0, deadline - time.monotonic()))


def steps(
    recipe: Recipe, source: str, progress: Path | None = None, trigger: str = "schedule"
) -> list[list[str]]:
    """The commands of one run of ``source``; the crawl writes its counts to ``progress``.
    A run the drift of the source's model triggered labels the inputs that drifted and
    retrains, without a crawl."""
    schedule = recipe.schedule
    if trigger == DRIFT:
        push = ["label", "push", source, "--drifted", model_name(source)]
        if schedule is not None and schedule.push:
            push += ["--batch", str(schedule.push)]
        if schedule is not None and schedule.strategy:
            push += ["--strategy", schedule.strategy]
        return [push, ["train", "--source", source]]
    out = [["crawl", source, *(["--progress-file", str(progress)] if progress else [])]]
    if schedule is not None and schedule.push:
        push = ["label", "push", source, "--batch", str(schedule.push)]
        out.append(push + (["--strategy", schedule.strategy] if schedule.strategy else []))
    if schedule is not None and schedule.retrain is True:
        out.append(["label", "retrain", source])
    return out


def crawl_counts(summary: dict[str, Any]) -> dict[str, int]:
    """The run's counts out of the JSON line `harvest crawl` prints last."""
    stats = summary.get("stats") or {}
    account = summary.get("account") or {}
    values = {
        "requests": stats.get("downloader/request_count", summary.get("requests")),
        "items": summary.get("items"),
        "curated": summary.get("curated"),
        "quarantined": summary.get("quarantined"),
        "bans": account.get("banned_responses"),
    }
    return {k: int(v) for k, v in values.items() if k in COUNTS and isinstance(v, (int, float))}


def last_summary(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                continue
            if isinstance(found, dict):
                return found
    return None


def last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "traceback"))]
    tail = [line for line in lines if not line.startswith("{")][-1:]
    return (errors[-1] if errors else tail[0] if tail else "no output")[:500]


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _wait_or_kill(proc: subprocess.Popen[bytes], grace: float) -> None:
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait()
    # whatever the step left in its group (a browser, a worker) goes with it
    _signal(proc, signal.SIGKILL)


def kill_orphans(runs: list[dict[str, Any]]) -> list[int]:
    """Kills the process groups of steps that a service killed outright left behind, so
    they cannot crawl beside the next run of their source."""
    killed = []
    for run in runs:
        pid = run.get("pid")
        if not pid:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"harvest.cli" in cmdline and os.getpgid(pid) == pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed.append(int(pid))
    return killed
