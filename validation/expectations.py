"""Runs a suite over a batch with Great Expectations and says which rows failed what."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
import pyarrow as pa
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.validator.v1_validator import Validator

from validation.suite import Rule, rule_name


@dataclass
class Outcome:
    rule: str
    column: str
    success: bool
    unexpected: int
    failed_rows: list[int]


def validate(df: pd.DataFrame, rules: list[Rule], name: str) -> list[Outcome]:
    """One outcome per rule; ``failed_rows`` are positions in ``df``."""
    expectations = [to_expectation(rule) for rule in rules]
    results = run_suite(df, expectations, name)
    outcomes = []
    for rule, res in zip(rules, results, strict=True):
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"expectation {rule_name(rule)} could not run: "
                f"{res.exception_info.get('exception_message')}"
            )
        rows = [int(i) for i in (res.result.get("unexpected_index_list") or [])]
        outcomes.append(
            Outcome(
                rule=rule_name(rule),
                column=rule.column,
                success=bool(res.success),
                unexpected=int(res.result.get("unexpected_count") or 0),
                failed_rows=rows,
            )
        )
    return outcomes


def plain_frame(df: pd.DataFrame, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """What the row-level suite sees: ``columns`` (None: all) in pandas' own dtypes (strings
    as ``str``, numbers as numpy, a null as NaN/NaT), which Great Expectations checks with
    vectorised pandas; list columns are left out (no row-level expectation reads one)."""
    wanted = set(df.columns if columns is None else columns)
    keep = []
    for col in df.columns:
        dtype = df[col].dtype
        if col not in wanted:
            continue
        if isinstance(dtype, pd.ArrowDtype) and pa.types.is_list(dtype.pyarrow_dtype):
            continue
        keep.append(col)
    out = pd.DataFrame(index=df.index)
    for col in keep:
        series = df[col]
        dtype = series.dtype
        if isinstance(dtype, pd.ArrowDtype):
            kind = dtype.pyarrow_dtype
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                series = series.astype("str")
                # a column of few distinct values (dates, categories) as a categorical:
                # Great Expectations' per-value checks (a date's format) then run once
                # per distinct value instead of once per row
                codes = series.astype("category")
                if len(codes.cat.categories) * 2 <= len(codes):
                    series = codes
            elif (pa.types.is_integer(kind) or pa.types.is_floating(kind)) and series.hasnans:
                series = series.astype("float64")
            elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
                series = series.astype(kind.to_pandas_dtype())
            else:
                series = series.astype(object).where(series.notna(), None)
        out[col] = series
    return out


# Only the failing rows' positions come back, not their values: the quarantine needs the
# former, and copying every failing value into each result costs more than the checks.
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "exclude_unexpected_values": True,
    "partial_unexpected_count": 0,
}


@functools.cache
def _context() -> Any:
    """One ephemeral context and dataframe asset per process, reused for every batch."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_pandas("harvest-source").add_dataframe_asset("harvest-batch")
    return asset.add_batch_definition_whole_dataframe("harvest-whole")


def run_suite(df: pd.DataFrame, expectations: list[Any], name: str) -> list[Any]:
    """Runs ``expectations`` as one Great Expectations suite over ``df``; one result each,
    in order."""
    batch_definition = _context()
    suite = gx.ExpectationSuite(name=f"{name}-suite")  # not saved: nothing to store
    for expectation in expectations:
        suite.add_expectation(expectation)
    # an unsaved suite gives its expectations no ids: these tie each result to its rule
    for i, expectation in enumerate(suite.expectations):
        expectation.id = str(i)
    frame = df.reset_index(drop=True)
    # a validator straight over the batch definition builds (and fingerprints) the frame
    # once; ``Batch.validate`` would build it twice
    validator = Validator(
        batch_definition=batch_definition,
        batch_parameters={"dataframe": frame},
        result_format=RESULT_FORMAT,
    )
    result = validator.validate_expectation_suite(suite)
    by_id = {r.expectation_config.id: r for r in result.results if r.expectation_config}
    owners = [
        next(s for s in suite.expectations if s is e or suite._expectations_are_equalish(s, e))
        for e in expectations
    ]
    return [by_id[e.id] for e in owners]


def to_expectation(rule: Rule) -> Any:
    col = rule.column
    if rule.expect == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=col)
    if rule.expect == "unique":
        return gxe.ExpectColumnValuesToBeUnique(column=col)
    if rule.expect == "length_between":
        return gxe.ExpectColumnValueLengthsToBeBetween(
            column=col, min_value=_int(rule.min), max_value=_int(rule.max)
        )
    if rule.expect == "between":
        return gxe.ExpectColumnValuesToBeBetween(column=col, min_value=rule.min, max_value=rule.max)
    if rule.expect == "date_parses":
        if rule.format:
            return gxe.ExpectColumnValuesToMatchStrftimeFormat(
                column=col, strftime_format=rule.format
            )
        return gxe.ExpectColumnValuesToBeDateutilParseable(column=col)
    raise ValueError(f"unknown expectation {rule.expect!r} for column {col!r}")


def _int(x: float | None) -> int | None:
    return None if x is None else int(x)
