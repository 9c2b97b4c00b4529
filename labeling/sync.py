"""Moves curated rows into Label Studio as tasks and annotations back into the lake."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from ingestion.errors import ConfigurationError, UnavailableError
from ingestion.lake import Lake
from labeling.records import export_rows, label_rows
from labeling.store import LabelStore
from labeling.tasktypes import FROM_NAME as FROM_NAME
from labeling.tasktypes import SINGLE, TaskType, task_type
from labeling.tasktypes import TO_NAME as TO_NAME

IMPORT_CHUNK = 500
# labels/<source> of a single-label project; see labeling.tasktypes for the other types
LABELS_SCHEMA = SINGLE.labels_schema


class SyncError(UnavailableError):
    """Label Studio did not answer, or not as it should."""


class SyncSetupError(ConfigurationError, SyncError):
    """Label Studio or the recipe is set up so that syncing cannot work."""


# what to do when Label Studio does not answer
START_HINT = "start it with `harvest label serve`"


def label_config(classes: list[str]) -> str:
    return SINGLE.label_config(classes)


def choice_result(label: str) -> list[dict[str, Any]]:
    return SINGLE.result(label)


@dataclass
class PushResult:
    project_id: int
    imported: int
    skipped: int


class LabelSync:
    def __init__(self, url: str, token: str, lake: Lake):
        self.url = url
        self.client = LabelStudio(base_url=url, api_key=token)  # type: ignore[no-untyped-call]
        self.lake = lake

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (requests.ConnectionError, ConnectionError, OSError) as exc:
            raise SyncError(
                f"Label Studio at {self.url} is unreachable ({what}): {exc}", hint=START_HINT
            ) from exc
        except ApiError as exc:
            raise SyncError(
                f"Label Studio at {self.url} refused {what}: {exc.status_code} {exc.body}"
            ) from exc
        except Exception as exc:  # httpx errors from the SDK's transport
            if type(exc).__module__.startswith("httpx"):
                raise SyncError(
                    f"Label Studio at {self.url} is unreachable ({what}): {exc}", hint=START_HINT
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

    def project(self, title: str, classes: list[str], kind: str | TaskType = SINGLE) -> int:
        """The id of the project called ``title``, created for task type ``kind`` when
        missing; an existing project whose label config is of another type is an error, as
        its annotations would not read back."""
        kind = task_type(kind)
        existing = self.project_titles().get(title)
        if existing is not None:
            found = self.call(f"reading project {existing}", self.client.projects.get, id=existing)
            if not kind.matches(found.label_config or ""):
                raise SyncSetupError(
                    f"project {title!r} (id {existing}) at {self.url} is not labelled as "
                    f"{kind.name!r}, the recipe's label_type; give the recipe the project's "
                    "type, or rename or delete the project"
                )
            return existing
        if not classes:
            raise SyncSetupError(f"cannot create project {title!r}: the recipe names no labels")
        created = self.call(
            "creating a project",
            self.client.projects.create,
            title=title,
            label_config=kind.label_config(classes),
        )
        return int(created.id)

    def task_row_ids(self, project_id: int) -> dict[str, int]:
        # only id and data, in big pages: with annotations and predictions, and 100 tasks a
        # page, listing 10,000 tasks takes four times as long
        tasks = self.call(
            "listing tasks",
            lambda: list(
                self.client.tasks.list(project=project_id, include="id,data", page_size=1000)
            ),
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
        what = f"exporting the annotations of project {project_id}"
        try:
            tasks = self.call(what, self.client.projects.exports.as_json, project_id)
        except ValueError as exc:  # a body cut short reads as broken JSON
            raise SyncError(
                f"Label Studio at {self.url} sent a broken export ({what}): {exc}"
            ) from exc
        if not isinstance(tasks, list):
            raise SyncError(f"Label Studio at {self.url} sent an export that is not a task list")
        return list(tasks)

    def pull(
        self,
        project_id: int,
        table: str,
        kind: str | TaskType = SINGLE,
        annotations_table: str | None = None,
    ) -> tuple[int, int | None]:
        """Writes the current annotations to ``table`` (one row per labelled task, its latest
        live annotation) and every live annotation to ``annotations_table`` (default:
        annotations/<source> for labels/<source>); returns (rows, new version of ``table``
        or None when nothing changed).

        The export is read whole before anything is written, and each table is replaced in
        one commit, so a pull that fails at any point and is run again loses and duplicates
        nothing; annotations deleted in Label Studio leave the tables.
        """
        kind = task_type(kind)
        if annotations_table is None:
            annotations_table = annotations_table_for(table)
        store = LabelStore(self.lake, table, annotations_table, kind, {"project_id": project_id})
        # held from export to write, so a webhook event recorded meanwhile is not undone
        with store.locked():
            return store.replace(export_rows(self.export(project_id), kind))


def annotations_table_for(labels_table: str) -> str:
    """annotations/<source> for labels/<source>."""
    if labels_table.startswith("labels/"):
        return "annotations/" + labels_table.removeprefix("labels/")
    return f"{labels_table}-annotations"


def annotations_to_rows(
    tasks: list[dict[str, Any]], kind: str | TaskType = SINGLE
) -> list[dict[str, Any]]:
    """One row per labelled task: its latest annotation that was not cancelled."""
    kind = task_type(kind)
    return label_rows(export_rows(tasks, kind), kind)
