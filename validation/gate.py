"""Splits the raw rows not yet curated into ``curated`` and ``quarantine``.

The recipe's transform steps run first (``ingestion/transforms``). Rows that pass every
expectation, less exact and near duplicates (``ingestion/dedup.py``: within the batch and
against what is already curated), go to ``curated/<source>`` with their ``dup_group``;
the duplicates go to ``duplicates/<source>`` with what they copy; rows that fail go to
``quarantine/<source>`` with the names of the expectations they failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.dedup import Deduper
from ingestion.lake import Lake
from ingestion.runs import last_run, record_run
from ingestion.transforms import apply_steps
from validation import batch as batch_gate
from validation.expectations import validate
from validation.report import write_report
from validation.suite import GateSpec

STAGE = "curate"


@dataclass
class CurateResult:
    source: str
    raw_version: int | None = None
    rows_in: int = 0
    curated: int = 0
    quarantined: int = 0
    duplicates_dropped: int = 0
    near_duplicates_dropped: int = 0
    curated_version: int | None = None
    quarantine_version: int | None = None
    duplicates_version: int | None = None
    report: str | None = None
    failures: dict[str, int] = field(default_factory=dict)
    batch_status: str | None = None  # published, held or accepted
    held_reasons: list[str] = field(default_factory=list)


def new_raw_rows(lake: Lake, source: str) -> tuple[pa.Table | None, int | None]:
    """Raw rows appended since the last curate run, and the raw version they reach."""
    table = f"raw/{source}"
    if not lake.exists(table):
        return None, None
    previous = last_run(lake, STAGE, source)
    since = previous["raw_version"] if previous else None
    dt = lake.table(table)
    files = lake.new_files(table, since)
    if not files:
        return None, dt.version()
    schema = dt.schema().to_arrow()
    parts = [pq.read_table(f) for f in files]
    merged = pa.concat_tables(parts, promote_options="default")
    columns = [c for c in pa.schema(schema).names if c in merged.column_names]
    return merged.select(columns), dt.version()


def curate(
    lake: Lake,
    source: str,
    spec: GateSpec,
    report_dir: str | Path,
    accept_batch: str | None = None,
) -> CurateResult:
    """``accept_batch``: a reason to publish the batch even if it fails a batch-level gate."""
    result = CurateResult(source=source)
    batch, raw_version = new_raw_rows(lake, source)
    result.raw_version = raw_version
    if batch is None or batch.num_rows == 0:
        return result
    df = batch.to_pandas(types_mapper=pd.ArrowDtype).sort_values("url", kind="stable")
    df = df.reset_index(drop=True)
    result.rows_in = len(df)
    df = apply_steps(df, spec.steps)

    # a batch failing a batch-level gate is held back whole, and the raw pointer stays put
    verdict = batch_gate.check_batch(lake, source, spec.batch, df)
    result.held_reasons = verdict.reasons
    if verdict.held and accept_batch is None:
        result.batch_status = batch_gate.HELD
        batch_gate.record(lake, source, verdict, raw_version, batch_gate.HELD)
        result.report = str(write_report(report_dir, source, raw_version, [], result, verdict))
        return result
    result.batch_status = batch_gate.ACCEPTED if verdict.held else batch_gate.PUBLISHED

    rules = spec.all_rules()
    outcomes = validate(_for_validation(df), rules, name=source)
    failed: dict[int, list[str]] = {}
    for outcome in outcomes:
        for i in outcome.failed_rows:
            failed.setdefault(i, []).append(outcome.rule)
        if outcome.unexpected:
            result.failures[outcome.rule] = outcome.unexpected

    bad = df.loc[sorted(failed)].copy()
    good = df.drop(index=list(failed))
    deduped = Deduper(lake, source, spec.text_field)(good)
    result.duplicates_dropped, result.near_duplicates_dropped = deduped.exact, deduped.near
    good = deduped.kept

    now = datetime.now(UTC)
    if len(good):
        curated = _typed(good, spec)
        curated["curated_at"] = now
        result.curated_version = lake.append(
            f"curated/{source}",
            pa.Table.from_pandas(curated, preserve_index=False),
            {"raw_version": raw_version},
        )
    if len(deduped.dropped):
        dropped = deduped.dropped.assign(dropped_at=now)
        result.duplicates_version = lake.append(
            f"duplicates/{source}",
            pa.Table.from_pandas(dropped, preserve_index=False),
            {"raw_version": raw_version},
        )
    if len(bad):
        bad["failed_expectations"] = [failed[i] for i in bad.index]
        bad["quarantined_at"] = now
        result.quarantine_version = lake.append(
            f"quarantine/{source}",
            pa.Table.from_pandas(bad, preserve_index=False),
            {"raw_version": raw_version},
        )
    result.curated, result.quarantined = len(good), len(bad)
    result.report = str(write_report(report_dir, source, raw_version, outcomes, result, verdict))
    batch_gate.record(lake, source, verdict, raw_version, result.batch_status, accept_batch)
    record_run(lake, STAGE, source, asdict(result))
    return result


def _for_validation(df: pd.DataFrame) -> pd.DataFrame:
    """Great Expectations works on plain object columns; list columns become their length."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        if isinstance(df[col].dtype, pd.ArrowDtype) and pa.types.is_list(
            df[col].dtype.pyarrow_dtype
        ):
            continue
        out[col] = df[col].astype(object).where(df[col].notna(), None)
    return out


def _typed(df: pd.DataFrame, spec: GateSpec) -> pd.DataFrame:
    out = df.copy()
    for col, fmt in spec.dates.items():
        parsed = pd.to_datetime(out[col].astype(object), format=fmt, errors="raise")
        out[col] = parsed.dt.date
    return out
