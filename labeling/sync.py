"""Moves curated rows into Label Studio as tasks and annotations back into the lake."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

import pyarrow as pa
import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from ingestion.lake import Lake

FROM_NAME = "label"
TO_NAME = "text"
IMPORT_CHUNK = 500
LABELS_SCHEMA = pa.schema(
    [
        ("task_id", pa.int64()),
        ("annotation_id", pa.int64()),
        ("row_id", pa.string()),
        ("url", pa.string()),
        ("label", pa.string()),
        ("annotator", pa.int64()),
        ("updated_at", pa.string()),
    ]
)


class SyncError(RuntimeError):
    pass


def label_config(classes: list[str]) -> str:
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
    return (
        f'<View><Text name="{TO_NAME}" value="$text"/>'
        f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">'
        f"{choices}</Choices></View>"
    )


def choice_result(label: str) -> list[dict[str, Any]]:
    return [
        {
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


@dataclass
class PushResult:
    project_id: int
    imported: int
    skipped: int


class LabelSync:
    def __init__(self, url: str, token: str, lake: Lake):
        self.url = url
        self.client = LabelStudio(base_url=url, api_key=token)
        self.lake = lake

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (requests.ConnectionError, ConnectionError, OSError) as exc:
            raise SyncError(f"Label Studio at {self.url} is unreachable ({what}): {exc}") from exc
        except ApiError as exc:
            raise SyncError(
                f"Label Studio at {self.url} refused {what}: {exc.status_code} {exc.body}"
            ) from exc
        except Exception as exc:  # httpx errors from the SDK's transport
            if type(exc).__module__.startswith("httpx"):
                raise SyncError(
                    f"Label Studio at {self.url} is unreachable ({what}): {exc}"
                ) from exc
            raise

    def project_titles(self) -> dict[str, int]:
        projects = self.call("listing projects", lambda: list(self.client.projects.list()))
        return {p.title: int(p.id) for p in projects}

    def delete_project(self, title: str) -> bool:
        project_id = self.project_titles().get(title)
        if project_id is None:
            return False
        self.call("deleting a project", self.client.projects.delete, id=project_id)
        return True

    def project(self, title: str, classes: list[str]) -> int:
        """The id of the project called ``title``, created when missing."""
        existing = self.project_titles().get(title)
        if existing is not None:
            return existing
        if not classes:
            raise SyncError(f"cannot create project {title!r}: the recipe names no labels")
        created = self.call(
            "creating a project",
            self.client.projects.create,
            title=title,
            label_config=label_config(classes),
        )
        return int(created.id)

    def task_row_ids(self, project_id: int) -> dict[str, int]:
        tasks = self.call(
            "listing tasks", lambda: list(self.client.tasks.list(project=project_id, fields="all"))
        )
        return {t.data.get("row_id"): int(t.id) for t in tasks if t.data.get("row_id")}

    def push(self, project_id: int, rows: Iterable[dict[str, Any]]) -> PushResult:
        """Imports rows as tasks, skipping any row the project already has."""
        known = self.task_row_ids(project_id)
        fresh: list[dict[str, Any]] = []
        skipped = 0
        for row in rows:
            if row["row_id"] in known:
                skipped += 1
                continue
            known[row["row_id"]] = -1
            fresh.append({"data": row})
        for start in range(0, len(fresh), IMPORT_CHUNK):
            self.call(
                "importing tasks",
                self.client.projects.import_tasks,
                id=project_id,
                request=fresh[start : start + IMPORT_CHUNK],
                return_task_ids=True,
            )
        return PushResult(project_id, len(fresh), skipped)

    def export(self, project_id: int) -> list[dict[str, Any]]:
        return list(
            self.call("exporting annotations", self.client.projects.exports.as_json, project_id)
        )

    def pull(self, project_id: int, table: str) -> tuple[int, int | None]:
        """Writes the current annotations to ``table``; returns (rows, new version or None)."""
        rows = annotations_to_rows(self.export(project_id))
        data = pa.Table.from_pylist(rows, schema=LABELS_SCHEMA)
        if self.lake.exists(table):
            current = self.lake.read(table).select(LABELS_SCHEMA.names)
            if current.sort_by("task_id").equals(data.sort_by("task_id")):
                return len(rows), None
        return len(rows), self.lake.overwrite(table, data, {"project_id": project_id})


def annotations_to_rows(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per labelled task: its latest annotation that was not cancelled."""
    rows = []
    for task in tasks:
        live = [
            a
            for a in task.get("annotations", [])
            if not a.get("was_cancelled") and _label(a) is not None
        ]
        if not live:
            continue
        latest = max(live, key=lambda a: (a.get("updated_at") or "", a["id"]))
        rows.append(
            {
                "task_id": task["id"],
                "annotation_id": latest["id"],
                "row_id": task["data"].get("row_id"),
                "url": task["data"].get("url"),
                "label": _label(latest),
                "annotator": latest.get("completed_by"),
                "updated_at": latest.get("updated_at"),
            }
        )
    return sorted(rows, key=lambda r: r["task_id"])


def _label(annotation: dict[str, Any]) -> str | None:
    for result in annotation.get("result", []):
        if result.get("from_name") == FROM_NAME and result.get("type") == "choices":
            choices = result.get("value", {}).get("choices", [])
            if choices:
                return str(choices[0])
    return None
