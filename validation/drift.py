"""Drift between two versions of a lake table: one test per field, drawn and summarised.

Numbers and dates: two-sample Kolmogorov-Smirnov. Categories (short strings with few
values, booleans, the items of list fields): chi-squared on the counts and the
Jensen-Shannon distance between the two distributions. Text: Kolmogorov-Smirnov on the
lengths, and the Jensen-Shannon distance between the frequencies of the most common tokens,
with the tokens that appeared or vanished. A field has drifted when its change is both
significant (p below ``alpha``) and large (KS statistic or JS distance at least
``min_effect``): with thousands of rows a test finds any change significant.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray
from scipy import stats
from scipy.spatial.distance import jensenshannon

from ingestion import deltalog
from ingestion.errors import InvalidInputError
from ingestion.html import Cell, png_uri, render
from ingestion.lake import Lake
from ingestion.schema import LAKE_COLUMNS

MAX_CATEGORIES = 50  # more distinct values than this (or than half the rows) is text
TOP_TOKENS = 200
TOKEN = re.compile(r"\w+", re.UNICODE)


class DriftError(InvalidInputError):
    """Versions that cannot be compared: absent, equal, empty or vacuumed."""


@dataclass
class FieldDrift:
    field: str
    kind: str
    test: str
    statistic: float
    pvalue: float
    drifted: bool
    rows: tuple[int, int]
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_version(lake: Lake, table: str, version: int) -> pa.Table:
    if not lake.exists(table):
        known = [t for t in lake.tables() if t.split("/")[0] == table.split("/")[0]]
        there = ", ".join(known) or "none"
        raise DriftError(f"no table {table!r} in lake {lake.root} (there: {there})")
    latest = lake.version(table)
    if version < 0 or latest is None or version > latest:
        raise DriftError(f"{table} has no version {version} (versions 0 to {latest})")
    return lake.read(table, version)  # a version vacuumed away: a LakeError that says so


def added_rows(lake: Lake, table: str, since: int, version: int) -> pa.Table:
    """The rows appended after ``since`` up to ``version``, read from the commit log: a
    compaction in between rewrites old rows into new files, which are not new rows."""
    load_version(lake, table, since)
    current = load_version(lake, table, version)
    try:
        files, _ = deltalog.data_added_since(lake.uri(table), since, version)
    except FileNotFoundError as exc:
        raise DriftError(
            f"cannot tell what {table} gained after version {since}: its log was cleaned up"
        ) from exc
    if not files:
        return current.slice(0, 0)
    import pyarrow.dataset as ds

    try:
        # a file written before a column was added gets nulls for it
        return ds.dataset(files, format="parquet", schema=current.schema).to_table()
    except FileNotFoundError as exc:
        raise DriftError(
            f"rows {table} gained after version {since} cannot be read: a file was vacuumed"
        ) from exc


def compare(
    before: pa.Table, after: pa.Table, alpha: float = 0.01, min_effect: float = 0.1
) -> list[FieldDrift]:
    """One result per field both tables hold (the lake's own columns left out)."""
    out = []
    for name in before.column_names:
        if name in LAKE_COLUMNS or name not in after.column_names:
            continue
        a, b = before[name], after[name]
        kind = _kind(a, b)
        if kind == "number":
            result = numbers(name, kind, _numeric(a), _numeric(b), alpha, min_effect)
        elif kind == "category":
            result = categories(name, _items(a), _items(b), alpha, min_effect)
        elif kind == "text":
            result = _text(name, a, b, alpha, min_effect)
        else:
            continue
        out.append(result)
    return out


def drift_report(
    lake: Lake,
    source: str,
    report_dir: str | Path,
    v_from: int,
    v_to: int,
    table: str = "curated",
    added: bool = False,
    alpha: float = 0.01,
    min_effect: float = 0.1,
) -> dict[str, Any]:
    """Compares ``<table>/<source>`` at ``v_from`` with ``v_to`` (or, with ``added``, with
    the rows appended after ``v_from`` up to ``v_to``); writes HTML with plots and JSON."""
    name = f"{table}/{source}"
    if v_from == v_to:
        raise DriftError(f"--from and --to are both version {v_from}: nothing to compare")
    if added and v_from > v_to:
        raise DriftError(f"--added needs --from ({v_from}) before --to ({v_to})")
    before = load_version(lake, name, v_from)
    after = added_rows(lake, name, v_from, v_to) if added else load_version(lake, name, v_to)
    if before.num_rows == 0 or after.num_rows == 0:
        empty = v_from if before.num_rows == 0 else v_to
        raise DriftError(f"{name} has no rows to compare at version {empty}")
    fields = compare(before, after, alpha, min_effect)
    folder = Path(report_dir) / "drift" / source
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{table}-v{v_from}-v{v_to}{'-added' if added else ''}"
    summary = {
        "table": name,
        "from": v_from,
        "to": v_to,
        "compared": "rows added after --from" if added else "the table at each version",
        "rows": [before.num_rows, after.num_rows],
        "alpha": alpha,
        "min_effect": min_effect,
        "drifted": [f.field for f in fields if f.drifted],
        "fields": [asdict(f) for f in fields],
        "written_at": datetime.now(UTC).isoformat(),
        "report": str(folder / f"{stem}.html"),
    }
    (folder / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=str))
    page = _page(summary, fields, before, after)
    (folder / f"{stem}.html").write_text(page, encoding="utf-8")
    return summary


def _kind(a: pa.ChunkedArray, b: pa.ChunkedArray) -> str:
    t = a.type
    if pa.types.is_boolean(t):
        return "category"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_temporal(t):
        return "number"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "category"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        values = pa.chunked_array(a.chunks + b.cast(a.type).chunks, a.type).drop_null()
        distinct = len(pc.unique(values))
        return "category" if distinct <= min(MAX_CATEGORIES, len(values) / 2) else "text"
    return "other"


def _numeric(column: pa.ChunkedArray) -> NDArray[np.float64]:
    values = column.drop_null()
    t = values.type
    if pa.types.is_temporal(t):
        if pa.types.is_date(t):
            values = values.cast(pa.date32()).cast(pa.int32())
        else:
            values = values.cast(pa.int64())
    return np.asarray(values.cast(pa.float64()).to_numpy(), dtype=float)


def _items(column: pa.ChunkedArray) -> list[str]:
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
    return [str(x) for x in column.drop_null().to_pylist()]


def numbers(
    name: str, kind: str, a: NDArray[Any], b: NDArray[Any], alpha: float, min_effect: float
) -> FieldDrift:
    """Two samples of a number, compared by Kolmogorov-Smirnov."""
    rows = (len(a), len(b))
    if len(a) == 0 or len(b) == 0:
        return FieldDrift(name, kind, "ks", 0.0, 1.0, False, rows, {"note": "no values"})
    res = stats.ks_2samp(a, b)
    details = {
        "mean": [float(a.mean()), float(b.mean())],
        "median": [float(np.median(a)), float(np.median(b))],
    }
    drifted = bool(res.pvalue < alpha and res.statistic >= min_effect)
    return FieldDrift(
        name, kind, "ks", float(res.statistic), float(res.pvalue), drifted, rows, details
    )


def categories(
    name: str, a: list[str], b: list[str], alpha: float, min_effect: float
) -> FieldDrift:
    """Two samples of a category, compared by chi-squared and Jensen-Shannon distance."""
    ca, cb = Counter(a), Counter(b)
    keys = [k for k, _ in (ca + cb).most_common(MAX_CATEGORIES)]
    rows = (len(a), len(b))
    if len(keys) < 2 or not a or not b:
        return FieldDrift(name, "category", "chi2", 0.0, 1.0, False, rows, {"categories": keys})
    pa_, pb = _dist(ca, keys), _dist(cb, keys)
    table = np.array([[ca[k] for k in keys], [cb[k] for k in keys]], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    chi2 = stats.chi2_contingency(table)
    js = float(jensenshannon(pa_, pb, base=2))
    drifted = bool(chi2.pvalue < alpha and js >= min_effect)
    details = {
        "js_distance": js,
        "chi2": float(chi2.statistic),
        "top": {k: [ca[k], cb[k]] for k in keys[:10]},
        "new": sorted(set(cb) - set(ca))[:20],
        "lost": sorted(set(ca) - set(cb))[:20],
    }
    return FieldDrift(name, "category", "chi2", js, float(chi2.pvalue), drifted, rows, details)


def _text(
    name: str, a: pa.ChunkedArray, b: pa.ChunkedArray, alpha: float, min_effect: float
) -> FieldDrift:
    la = np.asarray(pc.utf8_length(a).drop_null().to_numpy(), dtype=float)
    lb = np.asarray(pc.utf8_length(b).drop_null().to_numpy(), dtype=float)
    length = numbers(name, "text", la, lb, alpha, min_effect)
    ta, tb = _tokens(a), _tokens(b)
    keys = [k for k, _ in (ta + tb).most_common(TOP_TOKENS)]
    js = float(jensenshannon(_dist(ta, keys), _dist(tb, keys), base=2)) if keys else 0.0
    top_a = {k for k, _ in ta.most_common(TOP_TOKENS // 4)}
    top_b = {k for k, _ in tb.most_common(TOP_TOKENS // 4)}
    vocab_drifted = js >= min_effect
    details = {
        "length_ks": length.statistic,
        "length_pvalue": length.pvalue,
        "length_drifted": length.drifted,
        "length_mean": length.details.get("mean"),
        "vocabulary_js_distance": js,
        "vocabulary_drifted": vocab_drifted,
        # common now and never seen before, and the other way round
        "new_tokens": sorted(t for t in top_b if t not in ta)[:20],
        "lost_tokens": sorted(t for t in top_a if t not in tb)[:20],
    }
    return FieldDrift(
        name,
        "text",
        "length ks + vocabulary js",
        length.statistic,
        length.pvalue,
        length.drifted or vocab_drifted,
        length.rows,
        details,
    )


def _tokens(column: pa.ChunkedArray) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in column.drop_null().to_pylist():
        counts.update(TOKEN.findall(text.lower()))
    return counts


def _dist(counts: Counter[str], keys: list[str]) -> NDArray[np.float64]:
    v = np.array([counts[k] for k in keys], dtype=float)
    return v / v.sum() if v.sum() else np.full(len(keys), 1 / max(len(keys), 1))


def _page(
    summary: dict[str, Any], fields: list[FieldDrift], before: pa.Table, after: pa.Table
) -> str:
    verdicts = [
        [
            Cell(f.field, href=f"#{f.field}"),
            f.kind,
            f.test,
            f"{f.statistic:.4f}",
            f"{f.pvalue:.3g}",
            Cell("drifted", cls="fail") if f.drifted else Cell("stable", cls="ok"),
        ]
        for f in fields
    ]
    shown = [
        {
            "name": f.field,
            "details": json.dumps(f.details, indent=1, default=str),
            "plot": png_uri(_plot(f, before, after)),
        }
        for f in fields
    ]
    return render("validation", "drift.html", summary=summary, verdicts=verdicts, fields=shown)


def _plot(f: FieldDrift, before: pa.Table, after: pa.Table) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = before[f.field], after[f.field]
    labels = ("from", "to")
    if f.kind == "text":
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
        lengths = [np.asarray(pc.utf8_length(c).drop_null().to_numpy(), float) for c in (a, b)]
        _hist(ax1, lengths, labels)
        ax1.set_title(f"length of {f.field}")
        ax1.legend()
        ta, tb = _tokens(a), _tokens(b)
        keys = [k for k, _ in (ta + tb).most_common(15)]
        _bars(ax2, keys, _dist(ta, keys), _dist(tb, keys), "top tokens (share)")
    elif f.kind == "number":
        fig, ax1 = plt.subplots(figsize=(7, 3.6))
        _hist(ax1, [_numeric(a), _numeric(b)], labels)
        ax1.set_title(f.field)
        ax1.legend()
    else:
        fig, ax1 = plt.subplots(figsize=(9, 3.6))
        ca, cb = Counter(_items(a)), Counter(_items(b))
        keys = [k for k, _ in (ca + cb).most_common(15)]
        _bars(ax1, keys, _dist(ca, keys), _dist(cb, keys), f"{f.field} (share)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _hist(ax: Any, series: list[NDArray[Any]], labels: tuple[str, str]) -> None:
    """Both versions over the same bins, so their shapes can be compared."""
    edges = np.histogram_bin_edges(np.concatenate(series), bins=30)
    for values, label in zip(series, labels, strict=True):
        ax.hist(values, bins=edges, alpha=0.55, density=True, label=label)


def _bars(
    ax: Any, keys: list[str], a: NDArray[np.float64], b: NDArray[np.float64], title: str
) -> None:
    x = np.arange(len(keys))
    ax.bar(x - 0.2, a, width=0.4, label="from")
    ax.bar(x + 0.2, b, width=0.4, label="to")
    ax.set_xticks(x, [k[:14] for k in keys], rotation=60, ha="right", fontsize=7)
    ax.set_title(title)
    ax.legend()
