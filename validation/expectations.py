"""Runs a suite over a batch with Great Expectations and says which rows failed what."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
import pyarrow as pa
from great_expectations.data_context.types.base import ProgressBarsConfig

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


def plain_frame(df: pd.DataFrame) -> pd.DataFrame:
    """What the row-level suite sees: plain object columns, a null as None; list columns
    are left out (no row-level expectation reads one)."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        dtype = df[col].dtype
        if isinstance(dtype, pd.ArrowDtype) and pa.types.is_list(dtype.pyarrow_dtype):
            continue
        out[col] = df[col].astype(object).where(df[col].notna(), None)
    return out


def run_suite(df: pd.DataFrame, expectations: list[Any], name: str) -> list[Any]:
    """Runs ``expectations`` as one Great Expectations suite over ``df``; one result each,
    in order."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_pandas(f"{name}-source").add_dataframe_asset(f"{name}-batch")
    batch_def = asset.add_batch_definition_whole_dataframe(f"{name}-whole")
    suite = gx.ExpectationSuite(name=f"{name}-suite")
    for expectation in expectations:
        suite.add_expectation(expectation)
    suite = ctx.suites.add(suite)
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name}-validation", data=batch_def, suite=suite)
    )
    frame = df.reset_index(drop=True)
    result = definition.run(
        batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"}
    )
    by_id = {r.expectation_config.id: r for r in result.results if r.expectation_config}
    return [by_id[e.id] for e in expectations]


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
