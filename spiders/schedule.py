"""A recipe's ``schedule:``: when ``harvest serve`` crawls the source, and what follows.

``cron`` takes the five crontab fields (minute hour day month weekday) or six with seconds
first. Weekdays keep crontab's meaning (0 and 7 are Sunday); the scheduler numbers them
from Monday, so numeric weekdays are rewritten as names before they reach it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ingestion.errors import ConfigurationError

SCHEDULE_KEYS = {"cron", "timezone", "label", "retrain", "time_limit"}
LABEL_KEYS = {"push", "strategy"}
# labeling.strategies.STRATEGIES, which spiders may not import (a test keeps them equal)
STRATEGIES = ("random", "least_confidence", "margin", "entropy", "kcenter", "hybrid", "coldstart")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
DEFAULT_TIME_LIMIT = 3600.0


class ScheduleError(ConfigurationError):
    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"
    push: int | None = None  # label push: this many rows a run (None: no push)
    strategy: str | None = None  # None: the push command's default
    retrain: bool = False
    time_limit: float = DEFAULT_TIME_LIMIT  # seconds a whole run may take

    def fields(self) -> dict[str, str]:
        return cron_fields(self.cron)

    def as_json(self) -> dict[str, Any]:
        return {
            "cron": self.cron,
            "timezone": self.timezone,
            "label": {"push": self.push, "strategy": self.strategy} if self.push else None,
            "retrain": self.retrain,
            "time_limit": self.time_limit,
        }


def parse_schedule(raw: Any) -> Schedule:
    """The ``schedule:`` mapping of a recipe; ScheduleError names the key at fault."""
    if not isinstance(raw, dict):
        known = ", ".join(sorted(SCHEDULE_KEYS))
        raise ScheduleError("schedule", f"a mapping with keys from {known}")
    for key in raw:
        if key not in SCHEDULE_KEYS:
            known = ", ".join(sorted(SCHEDULE_KEYS))
            raise ScheduleError(f"schedule.{key}", f"unknown key (expected one of {known})")
    cron = raw.get("cron")
    if not isinstance(cron, str):
        raise ScheduleError("schedule.cron", 'required: a crontab expression like "*/30 * * * *"')
    tz = raw.get("timezone", "UTC")
    try:
        if not isinstance(tz, str) or not tz:
            raise ValueError
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            "schedule.timezone", f"not an IANA time zone like Europe/Paris: {tz!r}"
        ) from exc
    try:
        fields = cron_fields(cron)
        # the scheduler's own check of each field's values
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger(**fields, timezone=zone)
    except ValueError as exc:
        raise ScheduleError("schedule.cron", f"{cron!r}: {exc}") from exc
    push, strategy = None, None
    if "label" in raw:
        label = raw["label"]
        if not isinstance(label, dict) or set(label) - LABEL_KEYS or "push" not in label:
            raise ScheduleError("schedule.label", "a mapping: push (rows a run) and strategy")
        push, strategy = label["push"], label.get("strategy")
        if not isinstance(push, int) or isinstance(push, bool) or push < 1:
            raise ScheduleError("schedule.label.push", f"a whole number >= 1, got {push!r}")
        if strategy is not None and strategy not in STRATEGIES:
            raise ScheduleError(
                "schedule.label.strategy", f"one of {', '.join(STRATEGIES)}, got {strategy!r}"
            )
    retrain = raw.get("retrain", False)
    if not isinstance(retrain, bool):
        raise ScheduleError("schedule.retrain", "true or false")
    limit = raw.get("time_limit", DEFAULT_TIME_LIMIT)
    if not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit <= 0:
        raise ScheduleError("schedule.time_limit", f"seconds > 0, got {limit!r}")
    return Schedule(cron, tz, push, strategy, retrain, float(limit))


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
