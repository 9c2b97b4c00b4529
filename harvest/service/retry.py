"""Retries of failed scheduled runs, with backoff (the recipe's ``schedule.retries``).

A scheduled run that ends failed or timed out is tried again, up to ``retries`` times; the
k-th retry starts ``retry_delay * 2**(k-1)`` seconds after the try before it ended, so a
site that is down is not hammered. Each try is a run of its own in the history, with its
``attempt`` and the first try's id in ``retry_of``.

The wait is in the scheduler's thread of that source, so its next cron slot does not fire
meanwhile (one instance per job); the service's stop ends the wait at once. A retry that
finds the source busy (someone started it by hand meanwhile) is dropped: that run is the
fresh try. A cancelled or interrupted run is not retried: someone stopped it.
"""

from __future__ import annotations

import logging
from typing import Any

from harvest.recipe import RecipeError, Schedule, load_recipe
from harvest.service.runner import Runner
from harvest.service.runs import SourceBusyError
from ingestion.locks import BusyError
from ingestion.runs import FAILED, TIMED_OUT

log = logging.getLogger(__name__)
RETRIED = (FAILED, TIMED_OUT)


def delay(schedule: Schedule | None, run: dict[str, Any]) -> float | None:
    """Seconds before ``run`` is tried again; None when it is not to be."""
    if schedule is None or run["trigger"] != "schedule" or run["status"] not in RETRIED:
        return None
    attempt = int(run.get("attempt") or 1)
    if attempt > schedule.retries:
        return None
    return float(schedule.retry_delay * 2 ** (attempt - 1))


def schedule_of(runner: Runner, source: str) -> Schedule | None:
    """The recipe's schedule as it is now: an edit between tries counts."""
    try:
        return load_recipe(source, runner.config.sources).schedule
    except RecipeError as exc:
        log.warning("recipe of %s does not load, no retry: %s", source, exc)
        return None


def run_with_retries(runner: Runner, source: str) -> dict[str, Any] | None:
    """A scheduled run of ``source`` and its retries; the last try."""
    run = runner.run(source, "schedule")
    first = run
    while run is not None and first is not None:
        wait = delay(schedule_of(runner, source), run)
        if wait is None:
            break
        attempt = int(run["attempt"]) + 1
        log.info(
            "run %s of %s %s; try %s in %g s",
            run["id"],
            source,
            run["status"],
            attempt,
            wait,
            extra={"run_id": run["id"], "source": source, "attempt": attempt, "delay": wait},
        )
        if runner.stopping.wait(wait):
            break
        try:
            run = runner.run(source, "schedule", attempt, retry_of=first["id"])
        except (SourceBusyError, BusyError) as exc:
            log.info("retry of run %s dropped: %s", first["id"], exc, extra={"source": source})
            break
    return run
