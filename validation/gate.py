"""Splits the raw rows not yet curated into ``curated`` and ``quarantine``.

The recipe's transform steps run first (``ingestion/transforms``). Rows that pass every
expectation, less exact and near duplicates (``ingestion/dedup.py``: within the batch and
against what is already curated), go to ``curated/<source>`` with their ``dup_group``;
the duplicates go to ``duplicates/<source>`` with what they copy; rows that fail go to
``quarantine/<source>`` with the names of the expectations they failed.

A batch is the raw rows after the last recorded run's raw version up to ``raw_version``;
every commit it makes carries both (``raw_from``, ``raw_version``), and its run record,
written last, moves the watermark. A run killed between its commits leaves some of them
landed and no run record: the next run finds that batch first and finishes it, computing
the same rows again (dedup against ``curated`` as it was before the batch) and committing
only what had not landed, so nothing is lost or doubled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.dedup import Deduper, duplicates_table, keep_dropped
from ingestion.faults import pause_point
from ingestion.lake import LINEAGE_KEY, MOVES_NO_ROWS, Lake
from ingestion.runs import CURATE_STAGE, last_run, record_run
from ingestion.transforms import apply_steps
from validation import batch as batch_gate
from validation.expectations import plain_frame as _for_validation
from validation.expectations import validate
from validation.progress import CurateProgress
from validation.report import write_report
from validation.suite import GateSpec, curated_rows

STAGE = CURATE_STAGE
# More new raw rows than this are curated in runs of whole raw commits of about this many
# rows, each one batch (gated, committed and recorded as if curate had run after it), so
# the gate's memory stays bounded however far behind the crawler it is.
CHUNK_ROWS = 50_000
# commits of each table looked through for a killed run's batch: reviews of the quarantine
# may have committed since, but not many
HISTORY_SCAN = 50


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


def watermark(lake: Lake, source: str) -> int | None:
    """The raw version the last recorded curate run read up to (None: none has run)."""
    previous = last_run(lake, STAGE, source)
    return previous["raw_version"] if previous else None


def new_raw_rows(
    lake: Lake, source: str, until: int | None = None
) -> tuple[pa.Table | None, int | None]:
    """Raw rows appended since the last curate run up to version ``until`` (None: the
    latest), and the raw version they reach."""
    table = f"raw/{source}"
    if not lake.exists(table):
        return None, None
    since = watermark(lake, source)
    dt = lake.table(table)
    reach = dt.version() if until is None else until
    files = lake.new_files(table, since, until)
    if not files:
        return None, reach
    schema = dt.schema().to_arrow()
    with lake.readable(table):  # a raw file deleted by hand: a LakeError naming the table
        parts = [pq.read_table(f) for f in files]
    merged = pa.concat_tables(parts, promote_options="default")
    columns = [c for c in pa.schema(schema).names if c in merged.column_names]
    return merged.select(columns), reach


def pending_rows(lake: Lake, source: str) -> int:
    """Raw rows appended since the last curate run, as the log counts them."""
    table = f"raw/{source}"
    if not lake.exists(table):
        return 0
    since = watermark(lake, source)
    since = -1 if since is None else since
    return sum(
        int((entry.get("operationMetrics") or {}).get("num_added_rows") or 0)
        for entry in lake.table(table).history()
        if entry["version"] > since and entry.get("operation") not in MOVES_NO_ROWS
    )


def raw_chunks(lake: Lake, source: str, chunk_rows: int = CHUNK_ROWS) -> list[int | None]:
    """The raw versions that end each run of about ``chunk_rows`` new rows, the last one
    None (the latest version): ``[None]`` when the new rows fit in one."""
    table = f"raw/{source}"
    if not lake.exists(table):
        return [None]
    since = watermark(lake, source)
    since = -1 if since is None else since
    ends: list[int | None] = []
    rows = 0
    for entry in reversed(lake.table(table).history()):
        if entry["version"] <= since or entry.get("operation") in MOVES_NO_ROWS:
            continue
        rows += int((entry.get("operationMetrics") or {}).get("num_added_rows") or 0)
        if rows >= chunk_rows:
            ends.append(int(entry["version"]))
            rows = 0
    if not ends or rows:
        ends.append(None)
    return ends


def curate(
    lake: Lake,
    source: str,
    spec: GateSpec,
    report_dir: str | Path,
    accept_batch: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: CurateProgress | None = None,
) -> CurateResult:
    """``accept_batch``: a reason to publish the batch even if it fails a batch-level gate.

    New raw rows beyond ``chunk_rows`` are curated in several batches (see ``CHUNK_ROWS``);
    the result adds theirs up, and the run stops at the first one held back. ``progress``
    hears of each batch.
    """
    total: CurateResult | None = None
    if progress is not None:
        progress.start(pending_rows(lake, source))
    try:
        for until, resume in _batches(lake, source, chunk_rows):
            result = _curate_batch(lake, source, spec, report_dir, accept_batch, until, resume)
            # hand the batch's Arrow buffers back, so the next batch starts from a low mark
            pa.default_memory_pool().release_unused()
            accept_batch = None  # a hand's acceptance is for the held batch, which comes first
            total = result if total is None else _added(total, result)
            if progress is not None:
                progress.update(total)
            if result.batch_status == batch_gate.HELD:
                break
    finally:
        if progress is not None:
            progress.stop()
    assert total is not None
    return total


def _batches(lake: Lake, source: str, chunk_rows: int) -> Iterator[tuple[int | None, bool]]:
    """(raw version to read up to, whether a killed run began it): a killed run's batch
    first, then the chunks of what is new, planned once that batch is recorded."""
    pending = in_flight(lake, source)
    if pending is not None:
        yield pending, True
    for until in raw_chunks(lake, source, chunk_rows):
        yield until, False


def batch_tables(source: str) -> tuple[str, str, str]:
    return f"curated/{source}", duplicates_table(source), f"quarantine/{source}"


def in_flight(lake: Lake, source: str) -> int | None:
    """The raw version a killed run was curating up to: some of its batch's commits landed,
    or its batch was recorded, but its run never was."""
    since = watermark(lake, source)
    for table in batch_tables(source):
        for meta in _commits(lake, table).values():
            if meta.get("raw_from", -2) == since and meta.get("raw_version") is not None:
                return int(meta["raw_version"])
    for b in batch_gate.history(lake, source):
        if b["raw_from"] == since and b["raw_to"] is not None and b["status"] != batch_gate.HELD:
            return int(b["raw_to"])
    return None


def landed(lake: Lake, table: str, raw_from: int | None, raw_to: int | None) -> int | None:
    """The version at which batch ``raw_from``..``raw_to`` committed to ``table``, if it did."""
    for version, meta in _commits(lake, table).items():
        if meta.get("raw_from", -2) == raw_from and meta.get("raw_version") == raw_to:
            return version
    return None


def _commits(lake: Lake, table: str) -> dict[int, dict[str, Any]]:
    """The recent commits of ``table`` that carry metadata, by version."""
    if not lake.exists(table):
        return {}
    out = {}
    for entry in lake.table(table).history(limit=HISTORY_SCAN):
        if LINEAGE_KEY in entry:
            out[int(entry["version"])] = dict(json.loads(entry[LINEAGE_KEY]))
    return out


def _added(total: CurateResult, more: CurateResult) -> CurateResult:
    """Two consecutive batches' results as one."""
    failures = dict(total.failures)
    for rule, n in more.failures.items():
        failures[rule] = failures.get(rule, 0) + n
    statuses = {total.batch_status, more.batch_status}
    status = more.batch_status
    if status != batch_gate.HELD and batch_gate.ACCEPTED in statuses:
        status = batch_gate.ACCEPTED
    return CurateResult(
        source=total.source,
        raw_version=more.raw_version,
        rows_in=total.rows_in + more.rows_in,
        curated=total.curated + more.curated,
        quarantined=total.quarantined + more.quarantined,
        duplicates_dropped=total.duplicates_dropped + more.duplicates_dropped,
        near_duplicates_dropped=total.near_duplicates_dropped + more.near_duplicates_dropped,
        curated_version=more.curated_version or total.curated_version,
        quarantine_version=more.quarantine_version or total.quarantine_version,
        duplicates_version=more.duplicates_version or total.duplicates_version,
        report=more.report or total.report,
        failures=failures,
        batch_status=status,
        held_reasons=more.held_reasons,
    )


def _curate_batch(
    lake: Lake,
    source: str,
    spec: GateSpec,
    report_dir: str | Path,
    accept_batch: str | None,
    until: int | None,
    resume: bool = False,
) -> CurateResult:
    """One batch; ``resume``: a killed run began it, so some of its commits may have
    landed already (found by the batch's identity in their metadata) and are not redone."""
    result = CurateResult(source=source)
    since = watermark(lake, source)
    batch, raw_version = new_raw_rows(lake, source, until)
    result.raw_version = raw_version
    if batch is None or batch.num_rows == 0:
        return result
    identity = {"raw_from": since, "raw_version": raw_version}
    curated_t, duplicates_t, quarantine_t = tables = batch_tables(source)
    done = {t: landed(lake, t, since, raw_version) if resume else None for t in tables}
    df = batch.to_pandas(types_mapper=pd.ArrowDtype).sort_values("url", kind="stable")
    df = df.reset_index(drop=True)
    result.rows_in = len(df)
    df = apply_steps(df, spec.steps)

    # a batch failing a batch-level gate is held back whole, and the raw pointer stays put
    verdict = batch_gate.check_batch(lake, source, spec.batch, df, since)
    result.held_reasons = verdict.reasons
    recorded = batch_gate.recorded(lake, source, since, raw_version) if resume else None
    began = recorded is not None or any(v is not None for v in done.values())
    if verdict.held and accept_batch is None and began:
        # the killed run had published it, by hand or by the gate: finish, do not hold
        accept_batch = (recorded or {}).get("note") or "published by a run killed before it ended"
    if verdict.held and accept_batch is None:
        result.batch_status = batch_gate.HELD
        batch_gate.record(lake, source, verdict, since, raw_version, batch_gate.HELD)
        result.report = str(write_report(report_dir, source, raw_version, [], result, verdict))
        return result
    result.batch_status = batch_gate.ACCEPTED if verdict.held else batch_gate.PUBLISHED

    rules = spec.all_rules()
    outcomes = validate(_for_validation(df, {r.column for r in rules}), rules, name=source)
    failed: dict[int, list[str]] = {}
    for outcome in outcomes:
        for i in outcome.failed_rows:
            failed.setdefault(i, []).append(outcome.rule)
        if outcome.unexpected:
            result.failures[outcome.rule] = outcome.unexpected

    bad = df.loc[sorted(failed)].copy()
    good = df.drop(index=list(failed))
    # a batch whose curated rows landed before a kill is compared with curated without them
    landed_at = done[curated_t]
    before = None if landed_at is None else landed_at - 1
    deduper = Deduper(lake, source, spec.text_field, version=before)
    deduped = deduper(good)
    result.duplicates_dropped, result.near_duplicates_dropped = deduped.exact, deduped.near
    good = deduped.kept

    now = datetime.now(UTC)
    if len(good):
        result.curated_version = done[curated_t]
        if result.curated_version is None:
            rows = curated_rows(good, spec, now)
            result.curated_version = lake.append(curated_t, rows, identity)
    pause_point("curate:curated")
    deduper.sync_index()  # killed before this, the next lookup replays the commit
    pause_point("curate:index")
    result.duplicates_version = done[duplicates_t]
    if result.duplicates_version is None:
        result.duplicates_version = keep_dropped(lake, source, deduped, now, identity)
    pause_point("curate:duplicates")
    if len(bad):
        bad["failed_expectations"] = [failed[i] for i in bad.index]
        bad["quarantined_at"] = now
        result.quarantine_version = done[quarantine_t]
        if result.quarantine_version is None:
            rows = pa.Table.from_pandas(bad, preserve_index=False)
            result.quarantine_version = lake.append(quarantine_t, rows, identity)
    pause_point("curate:quarantine")
    result.curated, result.quarantined = len(good), len(bad)
    result.report = str(write_report(report_dir, source, raw_version, outcomes, result, verdict))
    if recorded is None:
        batch_gate.record(
            lake, source, verdict, since, raw_version, result.batch_status, accept_batch
        )
    pause_point("curate:batch")
    record_run(lake, STAGE, source, asdict(result))
    return result
