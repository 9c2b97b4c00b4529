"""Runs each scheduled source on its recipe's cron, with APScheduler and a SQLite job store.

The job store keeps each source's next run time across restarts, so a slot missed while
the service was down is still due when it starts; ``coalesce`` makes any number of missed
slots one run, and the unbounded grace time keeps it from being dropped as too late.
``max_instances=1`` keeps a slow run from overlapping the next slot; the run store's lock
covers a manual trigger of the same source too. A failed run's retries
(``harvest.service.retry``) belong to its slot.

``sync`` runs whenever a recipe file changes (``harvest.service.reload``), so a changed
cron takes effect, with its next run time, without a restart.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from harvest.config import Config
from harvest.recipe import RecipeError, Schedule, list_recipes, load_recipe
from harvest.service.retry import run_with_retries
from harvest.service.runner import Runner
from harvest.service.runs import SourceBusyError
from ingestion.locks import BusyError

log = logging.getLogger(__name__)
JOB_PREFIX = "crawl:"
# the job store holds a reference to ``fire``, not the scheduler: the live one is kept here
_active: SourceScheduler | None = None


def fire(source: str) -> None:
    """The job of every scheduled source (a module function, so the job store can keep it)."""
    if _active is not None:
        _active.fire(source)


def trigger_of(schedule: Schedule) -> CronTrigger:
    return CronTrigger(**schedule.fields(), timezone=ZoneInfo(schedule.timezone))


class SourceScheduler:
    def __init__(self, config: Config, runner: Runner, jobs_db: Path, workers: int = 8):
        self.config = config
        self.runner = runner
        jobs_db.parent.mkdir(parents=True, exist_ok=True)
        self.aps = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{jobs_db}")},
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
        )

    def start(self) -> None:
        global _active
        _active = self
        # paused until the jobs match the recipes: a missed slot must not fire first with
        # a trigger the recipe no longer has
        self.aps.start(paused=True)
        self.sync()
        self.aps.resume()

    def shutdown(self) -> None:
        global _active
        if self.aps.running:
            self.aps.shutdown(wait=False)
        if _active is self:
            _active = None

    def schedules(self) -> dict[str, Schedule | None]:
        """Recipe file name -> its schedule; recipes that do not load are left out."""
        out: dict[str, Schedule | None] = {}
        for path in list_recipes(self.config.sources):
            try:
                out[path.stem] = load_recipe(path).schedule
            except RecipeError as exc:
                log.warning(
                    "recipe %s does not load, its schedule is kept as it was: %s", path, exc
                )
        return out

    def sync(self) -> None:
        """Adds, changes and removes jobs to match the recipes. A job whose trigger did not
        change keeps its stored next run time, missed or not."""
        wanted = self.schedules()
        unreadable = {p.stem for p in list_recipes(self.config.sources)} - set(wanted)
        jobs = {j.id: j for j in self.aps.get_jobs()}
        for source, schedule in wanted.items():
            job_id = JOB_PREFIX + source
            job = jobs.pop(job_id, None)
            if schedule is None:
                if job is not None:
                    self.aps.remove_job(job_id)
                    log.info("source %s is no longer scheduled", source)
                continue
            trigger = trigger_of(schedule)
            if job is None:
                self.aps.add_job(fire, trigger, args=[source], id=job_id, name=source)
                log.info("scheduled %s: %s (%s)", source, schedule.cron, schedule.timezone)
            elif repr(job.trigger) != repr(trigger):
                self.aps.reschedule_job(job_id, trigger=trigger)
                log.info("rescheduled %s: %s (%s)", source, schedule.cron, schedule.timezone)
        for job_id in jobs:
            if job_id.removeprefix(JOB_PREFIX) not in unreadable:
                self.aps.remove_job(job_id)

    def fire(self, source: str) -> None:
        try:
            run = run_with_retries(self.runner, source)
        except SourceBusyError as exc:
            log.info(
                "scheduled run of %s skipped: %s",
                source,
                exc,
                extra={"source": source, "busy_run": exc.run["id"]},
            )
            return
        except BusyError as exc:  # a crawl started outside the service holds the lock
            log.info("scheduled run of %s skipped: %s", source, exc, extra={"source": source})
            return
        if run is not None:
            log.info("scheduled run %s of %s ended %s", run["id"], source, run["status"])

    def next_runs(self) -> dict[str, str | None]:
        """Source -> its next scheduled run (ISO time), None when it has none."""
        out: dict[str, str | None] = {}
        for source in self.schedules():
            job = self.aps.get_job(JOB_PREFIX + source) if self.aps.running else None
            when: Any = job.next_run_time if job is not None else None
            out[source] = when.isoformat() if when is not None else None
        return out
