"""How far labelling of a source has come: labelled rows of its curated ones, per class and
per annotator. One count for the API, the dashboard and the label report, so the three
task types are counted alike everywhere: a multi-label or span row has no single
``label`` (it is None), and counting that column would put every row under "None".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ingestion.lake import Lake
from labeling.tasktypes import MULTI, SINGLE, SPANS, TaskType, task_type

# what one count under "classes" is, for each task type
CLASSES_COUNT = {
    SINGLE.name: "tasks",
    MULTI.name: "tasks carrying the class (a task counts once per class)",
    SPANS.name: "spans",
}


def progress(
    kind: TaskType,
    labels: list[dict[str, Any]],
    annotations: list[dict[str, Any]] | None,
    curated: int,
    classes: Sequence[str] = (),
    tasks: int | None = None,
    tasks_note: str | None = None,
) -> dict[str, Any]:
    """The progress of ``labels`` (rows of ``labels/<source>``) against ``curated`` rows.

    ``classes``: the recipe's, listed first and at 0 when nobody chose them yet.
    ``annotations``: rows of ``annotations/<source>``, None when that table is missing.
    ``tasks``: the tasks Label Studio holds, None when it was not asked (``tasks_note``
    says why).
    """
    counts: Counter[str] = Counter()
    for row in labels:
        counts.update(classes_of(kind, row))
    order = list(dict.fromkeys([*classes, *sorted(counts)]))
    out: dict[str, Any] = {
        "curated": curated,
        "tasks": "unknown" if tasks is None else tasks,
        "labelled": len(labels),
        "labelled_share": round(len(labels) / curated, 4) if curated else None,
        "annotations": "unknown" if annotations is None else len(annotations),
        "classes": {c: counts[c] for c in order},
        "classes_count": CLASSES_COUNT.get(kind.name, "tasks"),
    }
    if tasks is None:
        out["tasks_note"] = tasks_note or "Label Studio was not asked"
    if annotations is not None:
        per = Counter(annotator(r) for r in annotations)
        out["annotators"] = dict(sorted(per.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def read_progress(
    lake: Lake, source: str, kind: str | TaskType = SINGLE, classes: Sequence[str] = ()
) -> dict[str, Any]:
    """The progress of ``source`` from the lake alone: Label Studio is not asked, so there
    is no task count. ``kind`` and ``classes`` are the recipe's.

    Once labels are pulled, the task type is the one ``labels/<source>`` was written with,
    told by its columns, so a recipe whose ``label_type`` changed since still reads it right.
    """
    table, labels = f"labels/{source}", None
    if lake.exists(table):
        labels = lake.read(table)
        kind = _kind_of(set(labels.column_names))
    kind = task_type(kind)
    annotations = (
        lake.read(f"annotations/{source}").to_pylist()
        if lake.exists(f"annotations/{source}")
        else None
    )
    curated_table, curated = f"curated/{source}", 0
    if lake.exists(curated_table):
        with lake.readable(curated_table):
            curated = lake.dataset(curated_table).count_rows()
    rows = labels.to_pylist() if labels is not None else []
    out = progress(kind, rows, annotations, curated, classes)
    del out["tasks"], out["tasks_note"]
    return {"label_type": kind.name, **out}


def classes_of(kind: TaskType, row: dict[str, Any]) -> list[str]:
    """The classes one ``labels/<source>`` row counts under."""
    if kind.name == MULTI.name:
        return list(row.get("labels") or [])
    if kind.name == SPANS.name:
        return [s["label"] for s in row.get("spans") or []]
    return [row["label"]] if row.get("label") is not None else []


def annotator(row: dict[str, Any]) -> str:
    # an annotation whose user the export did not name counts as its own annotator, so two
    # such annotations of one task are not mistaken for one person changing their mind
    who = row.get("annotator")
    return str(who) if who is not None else f"annotation {row['annotation_id']}"


def _kind_of(columns: set[str]) -> TaskType:
    # every type has a ``label`` column (None for multi and spans); the others add one each
    return SPANS if "spans" in columns else MULTI if "labels" in columns else SINGLE
