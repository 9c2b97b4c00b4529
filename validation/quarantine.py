"""Quarantine review: see why rows were held, re-run the gate over them, release or drop them.

Rows move by Delta commits: released rows are appended to ``curated/<source>`` first, then
removed from ``quarantine/<source>`` by a merge that touches only the rows reviewed, so a
curate run writing to quarantine at the same time loses nothing, and the table's history
keeps every row it ever held. Each review is recorded in ``runs`` (stage ``quarantine``)
with who, when, why and which rows.
"""

from __future__ import annotations

import getpass
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties

from ingestion.lake import LINEAGE_KEY, Lake, LakeError
from ingestion.runs import record_run, runs_of
from ingestion.transforms import StepError, apply_steps, check_columns
from validation.suite import GateSpec, curated_rows

STAGE = "quarantine"
KEY = ("url", "crawl_id", "content_sha256")
GATE_COLUMNS = ("failed_expectations", "quarantined_at")


class QuarantineError(LakeError):
    """A review that names no row, or rows quarantine does not hold."""


@dataclass
class Review:
    source: str
    action: str
    reason: str | None
    by: str
    reviewed: int = 0
    curated: int = 0
    duplicates_dropped: int = 0
    dropped: int = 0
    still_failing: int = 0
    curated_version: int | None = None
    quarantine_version: int | None = None
    urls: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)


def rows(lake: Lake, source: str) -> pa.Table:
    table = f"quarantine/{source}"
    if not lake.exists(table):
        return pa.table({"url": pa.array([], pa.string())})
    return lake.read(table)


def counts(lake: Lake, source: str) -> dict[str, Any]:
    """Quarantined rows and how many failed each expectation."""
    held = rows(lake, source)
    by: Counter[str] = Counter()
    if "failed_expectations" in held.column_names:
        for names in held["failed_expectations"].to_pylist():
            by.update(names or [])
    return {"source": source, "rows": held.num_rows, "by_expectation": dict(by.most_common())}


def show(
    lake: Lake,
    source: str,
    urls: list[str] | None = None,
    expectation: str | None = None,
    limit: int = 20,
    width: int = 80,
) -> list[dict[str, Any]]:
    """Quarantined rows (all, or those named), with why; text cut to ``width`` characters."""
    held = rows(lake, source)
    if urls or expectation:
        held = held.filter(select(held, source, urls or [], expectation, False))
    out = []
    for row in held.slice(0, limit).to_pylist():
        out.append({k: v if k == "url" else _cut(v, width) for k, v in row.items()})
    return out


def select(
    held: pa.Table, source: str, urls: list[str], expectation: str | None, everything: bool
) -> pa.Array:
    """The rows a review acts on: every row, or those with one of ``urls`` or failing
    ``expectation``. A URL or expectation matching no row is an error, not a silent no-op."""
    if everything:
        return pa.array([True] * held.num_rows)
    if not urls and not expectation:
        raise QuarantineError("say which rows: --url URL (repeatable), --expectation NAME or --all")
    mask = pc.is_in(held["url"], pa.array(urls, pa.string()))
    present = set(held["url"].to_pylist())
    for url in urls:
        if url not in present:
            raise QuarantineError(f"{url} is not in quarantine/{source}")
    if expectation:
        names = held["failed_expectations"].to_pylist() if held.num_rows else []
        known = sorted({n for ns in names for n in ns or []})
        if expectation not in known:
            raise QuarantineError(
                f"no row of quarantine/{source} failed {expectation!r} "
                f"(failed there: {', '.join(known) or 'none'})"
            )
        failing = pa.array([expectation in (ns or []) for ns in names])
        mask = pc.or_(mask, failing)
    return mask


def recheck(
    lake: Lake,
    source: str,
    spec: GateSpec,
    urls: list[str] | None = None,
    expectation: str | None = None,
) -> Review:
    """Runs the recipe's current steps and expectations over quarantined rows: those that
    pass now move to curated, as the steps leave them; the others stay, with what they fail
    now. Steps run again from what quarantine holds: ``normalize`` gives the same text twice,
    ``extract`` reads the stored HTML again."""
    held = rows(lake, source)
    chosen = held
    if urls or expectation:
        chosen = held.filter(select(held, source, urls or [], expectation, False))
    review = Review(
        source, "recheck", "the recipe's current steps and expectations", getpass.getuser()
    )
    if chosen.num_rows == 0:
        return review
    from validation.expectations import plain_frame, validate  # Great Expectations: slow

    frame = _frame(chosen)
    try:
        check_columns(spec.steps, frame.columns)  # a step reading a field added since
    except StepError as exc:
        raise QuarantineError(
            f"the recipe's steps cannot run on quarantine/{source}: steps{exc}"
        ) from exc
    frame = apply_steps(frame, spec.steps)
    outcomes = validate(plain_frame(frame), spec.all_rules(), name=f"{source}-recheck")
    failed: dict[int, list[str]] = {}
    for outcome in outcomes:
        for i in outcome.failed_rows:
            failed.setdefault(i, []).append(outcome.rule)
        if outcome.unexpected:
            review.failures[outcome.rule] = outcome.unexpected
    passed = pa.array([i not in failed for i in range(chosen.num_rows)])
    fresh = pa.Table.from_pandas(frame, preserve_index=False)
    still = chosen.filter(pc.invert(passed))
    still = still.set_column(
        still.schema.get_field_index("failed_expectations"),
        "failed_expectations",
        pa.array([failed[i] for i in sorted(failed)], pa.list_(pa.string())),
    )
    review.still_failing = still.num_rows
    _move(lake, source, spec, fresh.filter(passed), still, review)
    return review


def release(
    lake: Lake,
    source: str,
    spec: GateSpec,
    reason: str,
    urls: list[str] | None = None,
    expectation: str | None = None,
    everything: bool = False,
) -> Review:
    """Moves the rows named to curated as they are, whatever they fail: a person's call,
    recorded with ``reason``."""
    chosen = _chosen(lake, source, reason, urls, expectation, everything)
    review = Review(source, "release", reason, getpass.getuser())
    _move(lake, source, spec, chosen, chosen.slice(0, 0), review)
    return review


def drop(
    lake: Lake,
    source: str,
    reason: str,
    urls: list[str] | None = None,
    expectation: str | None = None,
    everything: bool = False,
) -> Review:
    """Removes the rows named from quarantine (raw and the table's history still hold them)."""
    chosen = _chosen(lake, source, reason, urls, expectation, everything)
    review = Review(source, "drop", reason, getpass.getuser())
    review.reviewed = review.dropped = chosen.num_rows
    review.urls = chosen["url"].to_pylist()
    review.quarantine_version = _remove(lake, source, chosen, None, review)
    _record(lake, review)
    return review


def reviews(lake: Lake, source: str) -> list[dict[str, Any]]:
    """Every review of ``source``'s quarantine, oldest first."""
    return runs_of(lake, STAGE, source)


def _chosen(
    lake: Lake,
    source: str,
    reason: str,
    urls: list[str] | None,
    expectation: str | None,
    everything: bool,
) -> pa.Table:
    if not reason or not reason.strip():
        raise QuarantineError("give a --reason: it is recorded with the rows")
    held = rows(lake, source)
    if held.num_rows == 0:
        raise QuarantineError(f"quarantine/{source} holds no rows")
    return held.filter(select(held, source, urls or [], expectation, everything))


def _move(
    lake: Lake, source: str, spec: GateSpec, passed: pa.Table, still: pa.Table, review: Review
) -> None:
    """Curated append first, then the quarantine merge: a crash in between leaves a row in
    both tables, never in neither, and the next review finds it a duplicate. Duplicates of
    what is curated are set aside as the gate sets them aside."""
    review.reviewed = passed.num_rows + still.num_rows
    review.urls = passed["url"].to_pylist()
    meta = _meta(source, review)
    if passed.num_rows:
        # datasketch: only reviews that move rows need it
        from ingestion.dedup import Deduper, keep_dropped

        now = datetime.now(UTC)
        deduped = Deduper(lake, source, spec.text_field)(_frame(passed))
        review.duplicates_dropped = deduped.exact + deduped.near
        keep_dropped(lake, source, deduped, now, meta)
        review.curated = len(deduped.kept)
        if review.curated:
            curated = curated_rows(deduped.kept, spec, now, coerce=True)
            review.curated_version = lake.append(f"curated/{source}", curated, meta)
    if passed.num_rows or still.num_rows:
        review.quarantine_version = _remove(lake, source, passed, still, review)
    _record(lake, review)


def _remove(
    lake: Lake, source: str, gone: pa.Table, updated: pa.Table | None, review: Review
) -> int | None:
    """One merge commit: delete ``gone`` and rewrite the failures of ``updated``."""
    keys = list(KEY)
    failures = pa.list_(pa.string())
    parts = [
        gone.select(keys)
        .append_column("_keep", pa.array([False] * gone.num_rows, pa.bool_()))
        .append_column("failed_expectations", pa.nulls(gone.num_rows, failures))
    ]
    if updated is not None and updated.num_rows:
        part = updated.select(keys).append_column(
            "_keep", pa.array([True] * updated.num_rows, pa.bool_())
        )
        parts.append(
            part.append_column("failed_expectations", updated["failed_expectations"].cast(failures))
        )
    source_rows = pa.concat_tables(parts)
    if source_rows.num_rows == 0:
        return None
    dt = lake.table(f"quarantine/{source}")
    merger = dt.merge(
        source_rows,
        predicate=" AND ".join(f"t.{k} = s.{k}" for k in keys),
        source_alias="s",
        target_alias="t",
        commit_properties=CommitProperties(
            custom_metadata={LINEAGE_KEY: json.dumps(_meta(source, review))}
        ),
    ).when_matched_delete(predicate="s._keep = false")
    if len(parts) > 1:
        merger = merger.when_matched_update(
            {"failed_expectations": "s.failed_expectations"}, predicate="s._keep = true"
        )
    merger.execute()
    return int(lake.table(f"quarantine/{source}").version())


def _frame(table: pa.Table) -> pd.DataFrame:
    """Quarantined rows as the gate saw them: without the gate's own columns."""
    ungated = table.drop_columns([c for c in GATE_COLUMNS if c in table.column_names])
    return ungated.to_pandas(types_mapper=pd.ArrowDtype)


def _meta(source: str, review: Review) -> dict[str, Any]:
    return {
        "review": review.action,
        "from": f"quarantine/{source}",
        "reason": review.reason,
        "by": review.by,
    }


def _record(lake: Lake, review: Review) -> None:
    record_run(lake, STAGE, review.source, asdict(review))


def _cut(value: Any, width: int) -> Any:
    if isinstance(value, str) and len(value) > width:
        return value[: width - 1] + "…"
    return value
