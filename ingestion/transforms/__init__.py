"""Transforms: small steps, each with one job, run in order over a batch of rows before the
gate checks it. A recipe lists its steps under ``steps:``; without the key a source gets
``DEFAULT_STEPS``.

A step is named alone (``- normalize``) or with options (``- normalize: {columns: [title]}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ingestion.transforms.base import Step, StepError
from ingestion.transforms.extract import Extract
from ingestion.transforms.language import Language
from ingestion.transforms.normalize import Normalize

STEPS: dict[str, type[Step]] = {s.name: s for s in (Extract, Normalize, Language)}
DEFAULT_STEPS: tuple[str, ...] = ("normalize", "language")

__all__ = [
    "DEFAULT_STEPS",
    "STEPS",
    "Extract",
    "Language",
    "Normalize",
    "Step",
    "StepError",
    "apply_steps",
    "check_columns",
    "outputs",
    "parse_steps",
]


def parse_steps(raw: Any, text_field: str) -> tuple[Step, ...]:
    """Steps from a recipe's ``steps:`` value (None: the defaults), names and options checked.

    Errors name the step by position, as in ``[1].column``; ``text_field`` is the column a
    step works on unless its options name another.
    """
    if raw is None:
        raw = list(DEFAULT_STEPS)
    if not isinstance(raw, list):
        raise StepError("", f"a list of steps from {', '.join(STEPS)}")
    steps: list[Step] = []
    for i, item in enumerate(raw):
        key = f"[{i}]"
        name, options = _name_and_options(key, item)
        try:
            steps.append(STEPS[name].from_options(options, text_field))
        except StepError as exc:
            raise StepError(f"{key}.{exc.key}", exc.problem) from exc
    return tuple(steps)


def check_columns(steps: Sequence[Step], columns: Iterable[str]) -> None:
    """Each step reads only ``columns`` (a raw row's) and what the steps before it wrote."""
    known = set(columns)
    for i, step in enumerate(steps):
        for column in step.inputs:
            if column not in known:
                raise StepError(f"[{i}]", f"reads {column!r}, which no field or earlier step gives")
        known.update(step.outputs)


def outputs(steps: Sequence[Step]) -> set[str]:
    """Every column the steps write."""
    return {c for s in steps for c in s.outputs}


def apply_steps(df: pd.DataFrame, steps: Sequence[Step]) -> pd.DataFrame:
    for step in steps:
        df = step(df)
    return df


def _name_and_options(key: str, item: Any) -> tuple[str, dict[str, Any]]:
    options: Any
    if isinstance(item, str):
        name, options = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        name, options = next(iter(item.items()))
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise StepError(f"{key}.{name}", "options are a mapping of option to value")
    else:
        raise StepError(key, "a step name, or a mapping of one step name to its options")
    if name not in STEPS:
        raise StepError(key, f"unknown step {name!r} (known: {', '.join(STEPS)})")
    return name, options
