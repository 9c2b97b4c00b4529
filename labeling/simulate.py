"""A simulated annotator: labels tasks through the Label Studio API from a ground-truth file."""

from __future__ import annotations

import json
from pathlib import Path

from ingestion.errors import InvalidInputError
from labeling.sync import LabelSync, choice_result


def load_truth(path: str | Path) -> dict[str, str]:
    """url -> class, from the demo site's ground truth file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read ground truth {path}: {exc}") from exc
    if not isinstance(data, dict) or "classes" not in data:
        raise InvalidInputError(f"{path}: not a ground truth file (no 'classes' key)")
    return dict(data["classes"])


def simulate(sync: LabelSync, project_id: int, truth: dict[str, str], n: int | None) -> int:
    """Labels up to ``n`` unlabelled tasks (all when None) in task order; returns how many."""
    tasks = sync.call(
        "listing tasks", lambda: list(sync.client.tasks.list(project=project_id, fields="all"))
    )
    done = 0
    for task in tasks:
        if n is not None and done >= n:
            break
        if task.total_annotations:
            continue
        label = truth.get(task.data.get("url", ""))
        if label is None:
            continue
        sync.call(
            f"annotating task {task.id}",
            sync.client.annotations.create,
            id=task.id,
            result=choice_result(label),
            lead_time=1.0,
        )
        done += 1
    return done
