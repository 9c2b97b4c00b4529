"""Batch-level gates: a batch compared with the last good batch of its source.

Every batch the gate sees leaves a row in the ``batches`` table: its profile (row count,
per-field null rate, summaries of numbers and of text and list lengths), what the
batch-level checks found, and whether it was published, held back or accepted by hand. A
held batch is neither curated nor quarantined and the gate's pointer into ``raw`` stays
where it was, so the next ``harvest curate`` retries it and nothing is lost.
"""

from __future__ import annotations

import getpass
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray
from scipy import stats

from ingestion.lake import Lake
from ingestion.schema import LAKE_COLUMNS
from validation.suite import BatchSpec

TABLE = "batches"
PUBLISHED, HELD, ACCEPTED = "published", "held", "accepted"
# values kept per field to compare distributions with: the whole batch up to this many,
# evenly spaced quantiles beyond
SAMPLE = 500
SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("raw_from", pa.int64()),
        ("raw_to", pa.int64()),
        ("rows", pa.int64()),
        ("status", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("by", pa.string()),
        ("note", pa.string()),
        ("baseline_raw_to", pa.int64()),
        ("profile", pa.string()),
        ("checks", pa.string()),
    ]
)


@dataclass
class Check:
    """One batch-level check: what was seen against what the last good batch allows."""

    check: str
    success: bool
    observed: float | None
    expected: str
    engine: str = "great_expectations"

    @property
    def reason(self) -> str:
        return f"{self.check} is {_fmt(self.observed)}, expected {self.expected}"


@dataclass
class BatchVerdict:
    profile: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    baseline_raw_to: int | None = None

    @property
    def held(self) -> bool:
        return any(not c.success for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [c.reason for c in self.checks if not c.success]


def profile(table: pa.Table) -> dict[str, Any]:
    """Row count and, per published field, its null rate and a summary of its values
    (numbers) or lengths (text and lists)."""
    out: dict[str, Any] = {"rows": table.num_rows, "fields": {}}
    for name in table.column_names:
        if name in LAKE_COLUMNS:
            continue
        column = table[name]
        kind, values = _values(column)
        entry: dict[str, Any] = {
            "kind": kind,
            "null_rate": column.null_count / table.num_rows if table.num_rows else 0.0,
        }
        if values is not None:
            entry.update(summary(values))
        out["fields"][name] = entry
    return out


def summary(values: NDArray[np.float64]) -> dict[str, Any]:
    if len(values) == 0:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None, "sample": []}
    ordered = np.sort(values)
    if len(ordered) > SAMPLE:
        ordered = np.asarray(np.quantile(ordered, np.linspace(0, 1, SAMPLE)), dtype=np.float64)
    return {
        "count": len(values),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "sample": [float(x) for x in ordered],
    }


def check_batch(
    lake: Lake, source: str, spec: BatchSpec | None, df: pd.DataFrame, since: int | None = None
) -> BatchVerdict:
    """Profiles ``df`` and, when the recipe declares batch gates and the source has a good
    batch to compare with, runs them: Great Expectations where an expectation maps, a
    Kolmogorov-Smirnov test (scipy) for a distribution's shape."""
    # Great Expectations takes seconds to import: `harvest status` reads this module without it
    import great_expectations.expectations as gxe

    from validation.expectations import run_suite

    table = pa.Table.from_pandas(df, preserve_index=False)
    verdict = BatchVerdict(profile=profile(table))
    # the last good batch up to the watermark: never this batch's own record, left by a
    # run killed after writing it
    baseline = good_upto(lake, source, since)
    if spec is None or baseline is None:
        return verdict
    verdict.baseline_raw_to = baseline["raw_to"]
    base = json.loads(baseline["profile"])
    now = verdict.profile
    planned: list[tuple[Check, Any]] = []
    if spec.min_rows_ratio is not None:
        least = math.ceil(spec.min_rows_ratio * base["rows"])
        expected = f">= {least} ({spec.min_rows_ratio:g} of {base['rows']} in the last good batch)"
        planned.append(
            (
                Check("row_count", True, now["rows"], expected),
                gxe.ExpectTableRowCountToBeBetween(min_value=least),
            )
        )
    common = [f for f in now["fields"] if f in base["fields"]]
    if spec.max_null_rate_increase is not None:
        for name in common:
            allowed = base["fields"][name]["null_rate"] + spec.max_null_rate_increase
            if allowed >= 1:
                continue
            observed = now["fields"][name]["null_rate"]
            expected = f"<= {allowed:.3g} (last good batch {base['fields'][name]['null_rate']:.3g})"
            planned.append(
                (
                    Check(f"null_rate({name})", True, observed, expected),
                    gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=1 - allowed),
                )
            )
    checks_after: list[Check] = []
    for name in spec.drift_fields:
        if name not in common or not base["fields"][name].get("sample"):
            continue
        before, after = base["fields"][name], now["fields"][name]
        label = name if before["kind"] == "number" else f"length({name})"
        if spec.max_mean_shift is not None and after.get("count"):
            mean = before["mean"]
            spread = spec.max_mean_shift * max(abs(mean), 1e-9)
            lo, hi = mean - spread, mean + spread
            planned.append(
                (
                    Check(f"mean({label})", True, after["mean"], f"in [{lo:.4g}, {hi:.4g}]"),
                    gxe.ExpectColumnMeanToBeBetween(column=name, min_value=lo, max_value=hi),
                )
            )
        if spec.min_ks_pvalue is not None and after.get("count"):
            pvalue = ks_pvalue(before, _values(table[name])[1])
            checks_after.append(
                Check(
                    f"ks_pvalue({label})",
                    pvalue >= spec.min_ks_pvalue,
                    pvalue,
                    f">= {spec.min_ks_pvalue:g} (same distribution as the last good batch)",
                    engine="scipy",
                )
            )
    if planned:
        results = run_suite(_frame(table), [e for _, e in planned], name=f"{source}-batch")
        for (check, _), res in zip(planned, results, strict=True):
            check.success = bool(res.success)
            if res.exception_info and res.exception_info.get("raised_exception"):
                check.expected += f" (could not run: {res.exception_info.get('exception_message')})"
    verdict.checks = [c for c, _ in planned] + checks_after
    return verdict


def ks_pvalue(before: dict[str, Any], values: NDArray[np.float64] | None) -> float:
    """Two-sample Kolmogorov-Smirnov p-value of ``values`` against a stored summary. When
    the summary holds quantiles rather than every value, the statistic is taken against
    them and the p-value from the asymptotic distribution with the true sizes."""
    if values is None or len(values) == 0:
        return 1.0
    sample = np.asarray(before["sample"], dtype=float)
    result = stats.ks_2samp(values, sample)
    if before["count"] <= len(sample):
        return float(result.pvalue)
    n, m = len(values), before["count"]
    return float(stats.kstwobign.sf(result.statistic * math.sqrt(n * m / (n + m))))


def record(
    lake: Lake,
    source: str,
    verdict: BatchVerdict,
    raw_from: int | None,
    raw_to: int | None,
    status: str,
    note: str | None = None,
) -> None:
    """Adds batch ``raw_from``..``raw_to`` to ``batches``; call before the curate run that
    moves the pointer."""
    row = {
        "source": source,
        "at": datetime.now(UTC),
        "raw_from": raw_from,
        "raw_to": raw_to,
        "rows": verdict.profile["rows"],
        "status": status,
        "reasons": verdict.reasons,
        "by": getpass.getuser(),
        "note": note,
        "baseline_raw_to": verdict.baseline_raw_to,
        "profile": json.dumps(verdict.profile),
        "checks": json.dumps([asdict(c) for c in verdict.checks]),
    }
    lake.append(TABLE, pa.Table.from_pylist([row], schema=SCHEMA))


def history(lake: Lake, source: str) -> list[dict[str, Any]]:
    """Every batch of ``source`` the gate has seen, oldest first."""
    if not lake.exists(TABLE):
        return []
    rows = lake.read(TABLE)
    mine = rows.filter(pc.equal(rows["source"], source)).sort_by("at")
    return list(mine.to_pylist())


def last_good(lake: Lake, source: str) -> dict[str, Any] | None:
    good = [b for b in history(lake, source) if b["status"] in (PUBLISHED, ACCEPTED)]
    return good[-1] if good else None


def good_upto(lake: Lake, source: str, since: int | None) -> dict[str, Any] | None:
    """The latest good batch that read no further than raw version ``since``."""
    if since is None:
        return None
    good = [
        b
        for b in history(lake, source)
        if b["status"] in (PUBLISHED, ACCEPTED) and b["raw_to"] is not None and b["raw_to"] <= since
    ]
    return good[-1] if good else None


def recorded(
    lake: Lake, source: str, raw_from: int | None, raw_to: int | None
) -> dict[str, Any] | None:
    """The good record of batch ``raw_from``..``raw_to``, if one was written."""
    for b in history(lake, source)[::-1]:
        if b["raw_from"] == raw_from and b["raw_to"] == raw_to and b["status"] != HELD:
            return b
    return None


def held(lake: Lake, source: str) -> list[dict[str, Any]]:
    """Holds since the last good batch, newest first: each is a try at the same raw rows
    (and whatever was crawled since), which the next curate run tries again."""
    batches = history(lake, source)
    since = max((i for i, b in enumerate(batches) if b["status"] != HELD), default=-1)
    return list(reversed(batches[since + 1 :]))


def _values(column: pa.ChunkedArray) -> tuple[str, NDArray[np.float64] | None]:
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = column.drop_null().cast(pa.float64())
        return "number", np.asarray(values.to_numpy(), dtype=float)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        lengths = pc.utf8_length(column).drop_null()
        return "text", np.asarray(lengths.to_numpy(), dtype=float)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = pc.list_value_length(column).drop_null()
        return "list", np.asarray(lengths.to_numpy(), dtype=float)
    return "other", None


def _frame(table: pa.Table) -> pd.DataFrame:
    """What the batch expectations see: numbers as numbers, text and lists as their
    lengths, anything else as objects; a null stays null."""
    out = pd.DataFrame(index=range(table.num_rows))
    for name in table.column_names:
        if name in LAKE_COLUMNS:
            continue
        column = table[name]
        kind, _ = _values(column)
        if kind == "number":
            out[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        elif kind == "text":
            out[name] = pc.utf8_length(column).cast(pa.float64()).to_numpy(zero_copy_only=False)
        elif kind == "list":
            lengths = pc.list_value_length(column).cast(pa.float64())
            out[name] = lengths.to_numpy(zero_copy_only=False)
        else:
            out[name] = pd.Series(column.to_pylist(), dtype=object)
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "none"
    return f"{x:.4g}" if isinstance(x, float) else str(x)
