"""Quarantine review: see why rows were held, re-run the gate over them, release or drop them.

Rows move by Delta commits: released rows are appended to ``curated/<source>`` first, then
removed from ``quarantine/<source>`` by a merge that touches only the rows reviewed, so a
curate run writing to quarantine at the same time loses nothing, and the table's history
keeps every row it ever held. Each review is recorded in ``runs`` (stage ``quarantine``)
with who, when, why and which rows.

A review acts on one row per key (``KEY``): where quarantine holds several, as after a raw
table got the same rows twice, the latest quarantined stands for them all, and the review
leaves at most that one behind.
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

from ingestion.errors import InvalidInputError
from ingestion.lake import LINEAGE_KEY, Lake
from ingestion.runs import record_run, runs_of
from ingestion.transforms import StepError, apply_steps, check_columns
from validation.suite import GateSpec, curated_rows

STAGE = "quarantine"
KEY = ("url", "crawl_id", "content_sha256")
GATE_COLUMNS = ("failed_expectations", "quarantined_at")


class QuarantineError(InvalidInputError):
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


def latest_per_key(held: pa.Table) -> pa.Table:
    """One row per ``KEY``: the latest quarantined (the later in the table on a tie)."""
    if held.num_rows < 2:
        return held
    order: list[int] = list(range(held.num_rows))
    if "quarantined_at" in held.column_names:
        # a stable sort: on a tie the later in the table comes last, and wins
        at = held["quarantined_at"]
        order = pc.array_sort_indices(at, null_placement="at_start").to_pylist()
    columns = [held[k].to_pylist() for k in KEY]
    latest = {tuple(c[i] for c in columns): i for i in order}
    if len(latest) == held.num_rows:
        return held
    return held.take(sorted(latest.values()))


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
    held = latest_per_key(rows(lake, source))
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
    held = latest_per_key(rows(lake, source))
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
    """One merge commit: delete every copy of ``gone``'s keys, and replace every copy of
    ``updated``'s by its one row with what it fails now.

    Replaced (deleted and inserted) rather than updated in place: an update would leave
    every copy, and two source rows matching one target row under two WHEN MATCHED clauses
    fail the whole merge.
    """
    keys = list(KEY)
    plain = pa.schema([(k, pa.string()) for k in keys])
    doomed, back = [gone.select(keys).cast(plain)], []
    if updated is not None and updated.num_rows:
        doomed.append(updated.select(keys).cast(plain))
        back.append(_tagged(updated, "insert"))
    deletes = pa.concat_tables(doomed)
    if deletes.num_rows == 0:
        return None
    source_rows = pa.concat_tables([_tagged(deletes, "delete"), *back], promote_options="default")
    # null-safe: a key with a null (a row without a crawl id) must still find its copies
    same = " AND ".join(f"(t.{k} IS NOT DISTINCT FROM s.{k})" for k in keys)
    lake.table(f"quarantine/{source}").merge(
        source_rows,
        predicate=f"{same} AND s._op = 'delete'",  # rows to insert match nothing
        source_alias="s",
        target_alias="t",
        commit_properties=CommitProperties(
            custom_metadata={LINEAGE_KEY: json.dumps(_meta(source, review))}
        ),
    ).when_matched_delete().when_not_matched_insert_all(predicate="s._op = 'insert'").execute()
    return int(lake.table(f"quarantine/{source}").version())


def _tagged(table: pa.Table, op: str) -> pa.Table:
    return table.append_column("_op", pa.array([op] * table.num_rows, pa.string()))


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
