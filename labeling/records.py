"""Label Studio annotations as lake rows: one per live annotation, and one per labelled task."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from labeling.tasktypes import TaskType


def instant(value: Any) -> str | None:
    """A timestamp as UTC ISO 8601 with microseconds, so that exports and webhook payloads,
    which may write the same instant differently, compare and sort as strings."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def annotation_row(
    task: dict[str, Any], annotation: dict[str, Any], kind: TaskType
) -> dict[str, Any] | None:
    """The annotations/<source> row of one annotation; None when it is not live (skipped, or
    it gives no value)."""
    if annotation.get("was_cancelled"):
        return None
    value = kind.parse(annotation.get("result"))
    if value is None:
        return None
    data = task.get("data") or {}
    return {
        "task_id": int(task["id"]),
        "annotation_id": int(annotation["id"]),
        "row_id": data.get("row_id"),
        "url": data.get("url"),
        "annotator": _user(annotation.get("completed_by")),
        "value": value,
        "updated_at": instant(annotation.get("updated_at") or annotation.get("created_at")),
    }


def export_rows(tasks: Iterable[dict[str, Any]], kind: TaskType) -> list[dict[str, Any]]:
    """Every live annotation of an export, in annotation order."""
    rows = []
    for task in tasks:
        for annotation in task.get("annotations") or []:
            row = annotation_row(task, annotation, kind)
            if row is not None:
                rows.append(row)
    return sorted(rows, key=lambda r: r["annotation_id"])


def label_rows(annotations: Iterable[dict[str, Any]], kind: TaskType) -> list[dict[str, Any]]:
    """One labels/<source> row per task: its latest live annotation."""
    latest: dict[int, dict[str, Any]] = {}
    for row in annotations:
        best = latest.get(row["task_id"])
        if best is None or _order(row) > _order(best):
            latest[row["task_id"]] = row
    return [label_row(latest[t], kind) for t in sorted(latest)]


def label_row(row: dict[str, Any], kind: TaskType) -> dict[str, Any]:
    return {
        "task_id": row["task_id"],
        "annotation_id": row["annotation_id"],
        "row_id": row["row_id"],
        "url": row["url"],
        **kind.label_columns(row["value"]),
        "annotator": row["annotator"],
        "updated_at": row["updated_at"],
    }


def _order(row: dict[str, Any]) -> tuple[str, int]:
    return (row.get("updated_at") or "", row["annotation_id"])


def _user(value: Any) -> int | None:
    # exports give the annotator's id; some payloads nest the user
    if isinstance(value, dict):
        value = value.get("id")
    return int(value) if isinstance(value, int) else None
