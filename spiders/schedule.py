"""The crawl's part of a recipe's ``schedule:``: when ``harvest serve`` crawls the source.

``cron`` takes the five crontab fields (minute hour day month weekday) or six with seconds
first. Weekdays keep crontab's meaning (0 and 7 are Sunday); the scheduler numbers them
from Monday, so numeric weekdays are rewritten as names before they reach it.
"""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field as Described
from pydantic.dataclasses import dataclass

from ingestion.sections import SECTION, Bounded, Checked, Section

DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
DEFAULT_TIME_LIMIT = 3600.0


def cron_problem(cron: str) -> str | None:
    """Why ``cron`` is not a crontab expression the scheduler takes, or None."""
    try:
        # the scheduler's own check of each field's values
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger(**cron_fields(cron), timezone="UTC")
    except ValueError as exc:
        return f"{cron!r}: {exc}"
    return None


def timezone_problem(tz: str) -> str | None:
    try:
        if not tz:
            raise ValueError
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return f"not an IANA time zone like Europe/Paris: {tz!r}"
    return None


@dataclass(frozen=True, kw_only=True, config=SECTION)
class Schedule(Section):
    """When ``harvest serve`` crawls a source, and how long a run may take. What follows
    the crawl (a label push, a retrain) is labeling's part (``labeling.section``);
    ``harvest.recipe.Schedule`` is both."""

    cron: Annotated[str, Checked(cron_problem, "a crontab expression")] = Described(
        description='a crontab expression like "*/30 * * * *" (5 fields, or 6 with seconds first)'
    )
    timezone: Annotated[str, Checked(timezone_problem, "an IANA time zone")] = Described(
        default="UTC", description="an IANA time zone like Europe/Paris the cron is read in"
    )
    time_limit: Annotated[float, Bounded(gt=0)] = Described(
        default=DEFAULT_TIME_LIMIT, description="seconds a whole run may take"
    )
    retries: Annotated[int, Bounded(whole=True, ge=0, le=20)] = Described(
        default=0, description="times a failed or timed-out scheduled run is tried again"
    )
    retry_delay: Annotated[float, Bounded(gt=0, le=86400)] = Described(
        default=60.0,
        description="seconds before the first retry; each later one waits twice the one before",
    )

    def fields(self) -> dict[str, str]:
        return cron_fields(self.cron)


def cron_fields(cron: str) -> dict[str, str]:
    """The scheduler's fields of a crontab expression (5 fields, or 6 with seconds first)."""
    parts = cron.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise ValueError(
            "5 fields (minute hour day month weekday) or 6 with seconds first, "
            f"not {len(cron.split())}"
        )
    names = ("second", "minute", "hour", "day", "month", "day_of_week")
    fields = dict(zip(names, parts, strict=True))
    fields["day_of_week"] = _weekdays(fields["day_of_week"])
    return fields


def _weekdays(field: str) -> str:
    """Crontab's weekday field as a list of day names (crontab counts from Sunday)."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        m = re.fullmatch(r"(\*|[a-z0-9]+)(?:-([a-z0-9]+))?(?:/(\d+))?", part.lower())
        if not m:
            raise ValueError(f"weekday {part!r} is not a day, a range or a step")
        first, last, step = m.groups()
        if first == "*":
            lo, hi = 0, 6
        else:
            lo = _day(first)
            hi = _day(last) if last else (6 if step else lo)
        if last and hi < lo and hi == 0:  # "5-7" and "fri-sun" end on Sunday
            hi = 7
        if hi < lo:
            raise ValueError(f"weekday range {part!r} runs backwards")
        if step is not None and int(step) == 0:
            raise ValueError(f"weekday step {part!r} is zero")
        days.update(d % 7 for d in range(lo, hi + 1, int(step or 1)))
    return ",".join(DAYS[d] for d in sorted(days))


def _day(token: str) -> int:
    if token.isdigit():
        if int(token) > 7:
            raise ValueError(f"weekday {token} is not 0-7 (0 and 7: Sunday)")
        return int(token)
    if token[:3] in DAYS and len(token) == 3:
        return DAYS.index(token)
    raise ValueError(f"weekday {token!r} is not 0-7 or sun..sat")
