"""The label quality report of one source: progress, agreement, suspected label errors.

Everything comes from the lake (``curated/<source>``, ``labels/<source>``,
``annotations/<source>``), so the report works with Label Studio down; only the count of
tasks in Label Studio needs it, and is "unknown" without it. Written as
``<reports>/labels/<source>-<stamp>.html`` with a ``.json`` of the same figures beside it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ingestion.errors import ConflictError
from ingestion.html import Cell, png_uri, render
from ingestion.lake import Lake
from labeling.progress import annotator, progress
from labeling.quality import agreement, label_issues, latest
from labeling.tasktypes import MULTI, SINGLE, SPANS, TaskType, task_type
from training.arrays import Floats

# fewer labelled rows than this make cross-validated probabilities noise, not evidence
MIN_LABELS = 10
PREVIEW = 160  # characters of a row's text shown beside a suspected error


class ReportError(ConflictError):
    pass


def label_report(
    lake: Lake,
    source: str,
    report_dir: str | Path,
    kind: str | TaskType = SINGLE,
    text_field: str = "body",
    folds: int = 5,
    classes: Sequence[str] = (),
    tasks: int | None = None,
    tasks_note: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Writes the report of ``source`` and returns its figures (what the JSON holds).

    ``classes``: the recipe's classes, listed with their counts even when nobody chose them
    yet. ``tasks``: the tasks Label Studio holds for the source, None when unknown
    (``tasks_note`` says why).
    """
    kind = task_type(kind)
    if folds < 2:
        raise ReportError(f"cross-validation needs at least 2 folds, got {folds}")
    labels_table, annotations_table = f"labels/{source}", f"annotations/{source}"
    if not lake.exists(labels_table):
        raise ReportError(
            f"no labels yet for {source!r} ({labels_table} is missing): label some tasks, "
            f"then run `harvest label pull {source}`"
        )
    labels = _rows(lake, labels_table, kind.labels_schema, kind)
    if not labels:
        raise ReportError(f"no labels yet for {source!r}: {labels_table} has no rows")
    annotations = (
        _rows(lake, annotations_table, kind.annotations_schema, kind)
        if lake.exists(annotations_table)
        else None
    )
    curated_table = f"curated/{source}"
    curated = lake.dataset(curated_table).count_rows() if lake.exists(curated_table) else 0

    summary: dict[str, Any] = {
        "source": source,
        "label_type": kind.name,
        "written_at": datetime.now(UTC).isoformat(),
        "progress": progress(kind, labels, annotations, curated, classes, tasks, tasks_note),
        "versions": {
            "curated": lake.version(curated_table),
            "labels": lake.version(labels_table),
            "annotations": lake.version(annotations_table),
        },
    }
    if annotations is None:
        summary["agreement"] = _not_computed(
            f"{annotations_table} is missing (labels pulled before it existed): run "
            f"`harvest label pull {source}` again"
        )
    else:
        summary["agreement"] = agreement_section(kind, annotations)
    summary["suspected_errors"] = suspected_errors(
        kind, labels, lake, curated_table, text_field, folds, seed
    )
    summary["reserve"] = reserve_section(lake, source, labels)
    return write(summary, Path(report_dir) / "labels")


# the test rows a 95% interval of +-0.05 on accuracy needs at worst (accuracy 0.5):
# 1.96^2 * 0.5 * 0.5 / 0.05^2
ROWS_FOR_5_POINTS = math.ceil(1.96**2 * 0.25 / 0.05**2)


def reserve_section(lake: Lake, source: str, labels: list[dict[str, Any]]) -> dict[str, Any]:
    """The labelled rows of the evaluation reserve, per class, and how many more a test
    split drawn from it needs for an interval of +-0.05."""
    from ingestion.datasets import reserve_table

    table = reserve_table(f"labels/{source}")
    held = (
        set(lake.read(table, columns=["row_id"])["row_id"].to_pylist())
        if lake.exists(table)
        else set()
    )
    mine = [row for row in labels if row.get("row_id") in held]
    per_class = Counter(str(row.get("label")) for row in mine)
    return {
        "pushed": len(held),
        "labelled": len(mine),
        "per_class": dict(sorted(per_class.items())),
        "needed_for_5_points": ROWS_FOR_5_POINTS,
        "more_needed": max(0, ROWS_FOR_5_POINTS - len(mine)),
    }


# -- agreement -----------------------------------------------------------------------------


def agreement_section(kind: TaskType, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    if kind.name == SPANS.name:
        return _not_computed(
            "agreement on spans needs the spans of different annotators matched to each "
            "other (overlap, boundaries), which this report does not do"
        )
    # oldest first: an annotator's later annotation of a task replaces their earlier one
    ordered = sorted(annotations, key=lambda r: (r.get("updated_at") or "", r["annotation_id"]))
    meta = {r["task_id"]: r for r in ordered}
    if kind.name == MULTI.name:
        return _multi_agreement(ordered, meta)
    records = [(r["task_id"], annotator(r), str(r["value"])) for r in ordered]
    result = agreement(records)
    if not result.tasks:
        return _no_shared_tasks()
    by_task = latest(records)
    return {
        "computed": True,
        "method": f"{result.method}'s kappa",
        "tasks": len(result.tasks),
        "annotators": len({who for t in result.tasks for who in by_task[t.task]}),
        "observed": result.observed,
        **_kappa(result.kappa),
        "disagreements": [
            {
                **_task(meta[t.task]),
                "labels": dict(sorted(by_task[t.task].items())),
                "majority": t.majority,
                "share": round(t.share, 4),
            }
            # the most split first; task ids compare as numbers, not as text
            for t in sorted(result.disagreements, key=lambda t: (t.share, -t.annotations, t.task))
        ],
    }


def _multi_agreement(
    ordered: list[dict[str, Any]], meta: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """Per class, kappa of "has it" against "has it not"; per task, the Jaccard index of
    the label sets, averaged over pairs of annotators."""
    sets: dict[int, dict[str, frozenset[str]]] = {}
    for r in ordered:
        sets.setdefault(r["task_id"], {})[annotator(r)] = frozenset(r["value"] or [])
    shared = {t: a for t, a in sets.items() if len(a) >= 2}
    if not shared:
        return _no_shared_tasks()
    per_task = {
        t: [jaccard(x, y) for x, y in itertools.combinations(a.values(), 2)]
        for t, a in shared.items()
    }
    pairs = [(x, y) for a in shared.values() for x, y in itertools.combinations(a.values(), 2)]
    per_class = {}
    for c in sorted({c for a in shared.values() for s in a.values() for c in s}):
        votes = [
            (t, who, "yes" if c in s else "no") for t, a in shared.items() for who, s in a.items()
        ]
        result = agreement(votes)
        per_class[c] = {
            "method": f"{result.method}'s kappa",
            "observed": result.observed,
            **_kappa(result.kappa),
        }
    defined = [v["kappa"] for v in per_class.values() if v["kappa"] is not None]
    split = [t for t, a in shared.items() if len(set(a.values())) > 1]
    split.sort(key=lambda t: (float(np.mean(per_task[t])), str(t)))
    return {
        "computed": True,
        "method": "per-class kappa (has the class or not) and Jaccard of the label sets",
        "tasks": len(shared),
        "annotators": len({who for a in shared.values() for who in a}),
        # pairs of annotations of one task that chose the very same set
        "observed": float(np.mean([x == y for x, y in pairs])),
        **_kappa(float(np.mean(defined)) if defined else float("nan")),
        "kappa_of": "the mean of the per-class kappas that are defined",
        "jaccard": float(np.mean([np.mean(v) for v in per_task.values()])),
        "per_class": per_class,
        "disagreements": [
            {
                **_task(meta[t]),
                "labels": {who: sorted(s) for who, s in sorted(shared[t].items())},
                "jaccard": round(float(np.mean(per_task[t])), 4),
            }
            for t in split
        ],
    }


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _kappa(value: float) -> dict[str, Any]:
    if math.isnan(value):
        return {"kappa": None, "kappa_note": "undefined: every annotation gave the same answer"}
    return {"kappa": value}


def _no_shared_tasks() -> dict[str, Any]:
    return _not_computed(
        "no task has annotations of two annotators yet: agreement needs some tasks "
        "labelled twice (Label Studio's overlap setting)"
    )


def _not_computed(reason: str) -> dict[str, Any]:
    return {"computed": False, "reason": reason}


def _task(row: dict[str, Any]) -> dict[str, Any]:
    return {"task_id": row["task_id"], "url": row.get("url"), "row_id": row.get("row_id")}


# -- suspected label errors ------------------------------------------------------------------


def suspected_errors(
    kind: TaskType,
    labels: list[dict[str, Any]],
    lake: Lake,
    curated_table: str,
    text_field: str,
    folds: int,
    seed: int = 0,
) -> dict[str, Any]:
    if kind.name != SINGLE.name:
        return _not_computed(
            f"the labelling model predicts one class a row; {kind.name!r} labels are not "
            "checked against it"
        )
    if not lake.exists(curated_table):
        return _not_computed(f"{curated_table} is missing: the labelled rows have no text")
    if text_field not in lake.dataset(curated_table).schema.names:
        return _not_computed(f"{curated_table} has no column {text_field!r}, the text to check")
    curated = lake.read(curated_table, columns=["content_sha256", text_field])
    text = dict(zip(*(curated[c].to_pylist() for c in curated.column_names), strict=True))
    rows = [r for r in labels if r.get("label") is not None and text.get(r["row_id"])]
    # labels of rows no longer curated (or with no text) are left out: nothing to predict from
    left_out = sum(1 for r in labels if r.get("label") is not None) - len(rows)
    texts = [str(text[r["row_id"]]) for r in rows]
    given = [str(r["label"]) for r in rows]
    checked = {"folds": folds, "rows": len(rows), "left_out": left_out}
    counts = Counter(given)
    if len(rows) < MIN_LABELS:
        return {
            **_not_computed(
                f"too few labels: {len(rows)} labelled rows with text, cross-validation needs "
                f"at least {MIN_LABELS}"
            ),
            **checked,
        }
    if len(counts) < 2:
        only = next(iter(counts))
        return {
            **_not_computed(
                f"every labelled row is {only!r}: a model needs labels of two classes or more"
            ),
            **checked,
        }
    few = sorted((c for c, n in counts.items() if n < folds), key=lambda c: (counts[c], c))
    if few:
        listed = ", ".join(f"{c!r} has {counts[c]}" for c in few)
        return {
            **_not_computed(
                f"too few labels of some classes for {folds}-fold cross-validation ({listed}; "
                f"each class needs {folds}): label more of them, or lower --folds (at least 2)"
            ),
            **checked,
        }
    from labeling.model import ModelError

    try:
        probs, classes = out_of_sample(texts, given, folds, seed)
    except ModelError as exc:
        return {**_not_computed(str(exc)), **checked}
    y = np.array([classes.index(g) for g in given], dtype=np.int64)
    issues = label_issues(y, probs)
    return {
        "computed": True,
        "method": (
            f"confident learning (cleanlab) on {folds}-fold cross-validated probabilities "
            "of the labelling model"
        ),
        **checked,
        "accuracy": float((probs.argmax(axis=1) == y).mean()),
        "issues": [
            {
                **_task(rows[i.index]),
                "annotator": rows[i.index].get("annotator"),
                "given": classes[i.given],
                "suggested": classes[i.suggested],
                "self_confidence": round(i.self_confidence, 4),
                "suggested_confidence": round(float(probs[i.index, i.suggested]), 4),
                "text": _preview(texts[i.index]),
            }
            for i in issues
        ],
    }


def out_of_sample(
    texts: Sequence[str], labels: Sequence[str], folds: int, seed: int = 0
) -> tuple[Floats, list[str]]:
    """(rows, classes) probabilities, each row's from the labelling model fitted on the
    other folds (stratified), and the classes in column order (sorted)."""
    from sklearn.model_selection import StratifiedKFold

    from labeling.model import fit

    classes = sorted(set(labels))
    y = np.array([classes.index(c) for c in labels])
    probs = np.zeros((len(labels), len(classes)))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in split.split(np.zeros(len(y)), y):
        model = fit([texts[i] for i in train], [labels[i] for i in train], version="cv")
        columns = [classes.index(c) for c in model.classes]
        probs[np.ix_(test, columns)] = model.predict_proba([texts[i] for i in test])
    return probs, classes


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW else flat[: PREVIEW - 1] + "…"


# -- reading -------------------------------------------------------------------------------


def _rows(lake: Lake, table: str, schema: pa.Schema, kind: TaskType) -> list[dict[str, Any]]:
    data = lake.read(table)
    have = {f.name: f.type for f in data.schema}
    for f in schema:
        if f.name not in have or _shape(have[f.name]) != _shape(f.type):
            raise ReportError(
                f"table {table!r} does not hold {kind.name!r} labels (column {f.name!r}); "
                "the recipe's label_type and the table disagree: `harvest label pull` "
                "rewrites it from Label Studio"
            )
    return list(data.to_pylist())


def _shape(t: pa.DataType) -> str:
    # what tells the task types apart; the lake may read a list's item name or a string's
    # width back differently from the schema it was written with
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list of {_shape(t.value_type)}"
    return "struct" if pa.types.is_struct(t) else "value"


# -- writing -------------------------------------------------------------------------------


def write(summary: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Writes ``<source>-<stamp>.html`` and ``.json`` (and the chart) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(summary["written_at"]).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{summary['source']}-{stamp}"
    # two reports within one second keep both
    for n in itertools.count(2):
        if not (folder / f"{stem}.html").exists() and not (folder / f"{stem}.json").exists():
            break
        stem = f"{summary['source']}-{stamp}-{n}"
    html, data = folder / f"{stem}.html", folder / f"{stem}.json"
    chart = folder / f"{stem}-classes.png"
    summary = {**summary, "report": str(html), "json": str(data), "chart": None}
    if any(summary["progress"]["classes"].values()):
        draw_classes(summary["progress"]["classes"], chart, f"labels of {summary['source']}")
        summary["chart"] = str(chart)
    data.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    html.write_text(page(summary), encoding="utf-8")
    return summary


def draw_classes(counts: dict[str, int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(counts)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.4))
    bars = ax.bar(range(len(names)), [counts[n] for n in names], color="#4a78b0")
    ax.bar_label(bars)
    tilt = len(names) > 4  # long rows of names overlap unless tilted
    ax.set_xticks(
        range(len(names)), names, rotation=30 if tilt else 0, ha="right" if tilt else "center"
    )
    ax.margins(y=0.12)  # room for the count above the tallest bar
    ax.set_ylabel("count")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def describe(summary: dict[str, Any]) -> list[str]:
    """A few lines for a person reading the terminal."""
    p, a, s = summary["progress"], summary["agreement"], summary["suspected_errors"]
    tasks = p["tasks"] if p["tasks"] != "unknown" else f"unknown ({p.get('tasks_note')})"
    lines = [
        f"{summary['source']}: {p['labelled']} labelled of {p['curated']} curated rows, "
        f"{p['annotations']} annotations, tasks in Label Studio: {tasks}",
    ]
    if a["computed"]:
        kappa = "undefined" if a["kappa"] is None else f"{a['kappa']:.3f}"
        lines.append(
            f"agreement over {a['tasks']} tasks: kappa {kappa}, observed {a['observed']:.3f}, "
            f"{len(a['disagreements'])} disagreements"
        )
    else:
        lines.append(f"agreement not computed: {a['reason']}")
    if s["computed"]:
        lines.append(f"suspected label errors: {len(s['issues'])} of {s['rows']} labelled rows")
    else:
        lines.append(f"suspected label errors not computed: {s['reason']}")
    r = summary.get("reserve")
    if r:
        per = ", ".join(f"{c} {n}" for c, n in r["per_class"].items()) or "none"
        lines.append(
            f"evaluation reserve: {r['labelled']} labelled of {r['pushed']} pushed ({per}); "
            f"{r['more_needed']} more for a test interval of +-0.05"
        )
    return lines


def page(summary: dict[str, Any]) -> str:
    p, a, s = summary["progress"], summary["agreement"], summary["suspected_errors"]
    tasks = p["tasks"] if p["tasks"] != "unknown" else f"unknown: {p.get('tasks_note')}"
    figures = {
        "curated rows": p["curated"],
        "tasks in Label Studio": tasks,
        "labelled tasks": p["labelled"],
        "labelled share of curated": p["labelled_share"],
        "annotations": p["annotations"],
    }
    agreed: list[list[Any]] = []
    if a["computed"]:
        agreed = [
            ["method", a["method"]],
            ["tasks with 2+ annotations", a["tasks"]],
            ["annotators", a["annotators"]],
            ["observed agreement", a["observed"]],
            ["kappa", a["kappa"] if a["kappa"] is not None else a.get("kappa_note")],
        ]
        if "jaccard" in a:
            agreed.append(["mean Jaccard of label sets", a["jaccard"]])
    per_class = [
        [c, v["kappa"] if v["kappa"] is not None else v.get("kappa_note"), v["observed"]]
        for c, v in a.get("per_class", {}).items()
    ]
    disagreements = [
        [
            d["task_id"],
            _link(d["url"]),
            "; ".join(f"{w}: {_show(v)}" for w, v in d["labels"].items()),
        ]
        for d in a.get("disagreements", [])
    ]
    issues = [
        [
            i["task_id"],
            _link(i["url"]),
            i["given"],
            i["suggested"],
            i["self_confidence"],
            i["suggested_confidence"],
            i["text"],
        ]
        for i in s.get("issues", [])
    ]
    tables = {
        "figures": figures.items(),
        "classes": p["classes"].items(),
        "annotators": p.get("annotators", {}).items(),
        "agreement": agreed,
        "per_class": per_class,
        "disagreements": disagreements,
        "issues": issues,
    }
    # the chart is written beside the page too; the page carries its own copy
    chart = summary.get("chart")
    return render(
        "labeling",
        "labels.html",
        s=summary,
        versions=json.dumps(summary["versions"]),
        chart=png_uri(Path(chart).read_bytes()) if chart else None,
        **{name: _figures(rows) for name, rows in tables.items()},
    )


def _figures(rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    # four significant digits for every figure of the page
    return [[f"{v:.4g}" if isinstance(v, float) else v for v in row] for row in rows]


def _show(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _link(url: str | None) -> Cell | str:
    # only web addresses become links: a crawled "javascript:" one stays text
    if url and url.startswith(("http://", "https://")):
        return Cell(url, href=url)
    return url or ""
