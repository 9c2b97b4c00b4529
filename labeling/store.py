"""The lake side of labelling: labels/<source> and annotations/<source> of one project.

A pull replaces both tables with what Label Studio holds; a webhook event changes the rows of
one annotation and of its task. labels/<source> is always derived from annotations/<source>
(the latest live annotation of each task), so deleting an annotation brings back the one
before it, if any.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties
from deltalake.exceptions import CommitFailedError

from ingestion.errors import ConflictError
from ingestion.lake import KEEP_LOG, LINEAGE_KEY, Lake
from labeling.records import annotation_row, label_rows
from labeling.tasktypes import TaskType

COMMIT_ATTEMPTS = 5
_LOCKS: dict[tuple[str, str], threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


class StoreError(ConflictError):
    pass


class LabelStore:
    def __init__(
        self,
        lake: Lake,
        labels_table: str,
        annotations_table: str,
        kind: TaskType,
        metadata: dict[str, Any] | None = None,
    ):
        self.lake = lake
        self.labels_table = labels_table
        self.annotations_table = annotations_table
        self.kind = kind
        self.metadata = dict(metadata or {})
        # one writer at a time per table pair in this process: a pull and webhook events
        # would otherwise race each other's commits, and a pull must not overwrite an event
        # that arrived while it was exporting
        key = (lake.uri(labels_table), lake.uri(annotations_table))
        with _LOCKS_GUARD:
            self.lock = _LOCKS.setdefault(key, threading.RLock())

    @classmethod
    def for_source(
        cls, lake: Lake, source: str, kind: TaskType, metadata: dict[str, Any] | None = None
    ) -> LabelStore:
        return cls(lake, f"labels/{source}", f"annotations/{source}", kind, metadata)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.lock:
            yield

    # -- a pull: the whole state at once --------------------------------------------------

    def replace(self, annotations: list[dict[str, Any]]) -> tuple[int, int | None]:
        """Both tables become ``annotations`` (rows from records.annotation_row); returns
        (labelled tasks, new labels version or None when it did not change).

        Each table is overwritten in one commit, and only when its rows differ, so a pull
        that is repeated after dying half way gives the same tables and no new versions.
        """
        labels = label_rows(annotations, self.kind)
        with self.lock:
            self._overwrite(self.annotations_table, annotations, self.kind.annotations_schema)
            version = self._overwrite(self.labels_table, labels, self.kind.labels_schema)
        return len(labels), version

    def _overwrite(self, table: str, rows: list[dict[str, Any]], schema: pa.Schema) -> int | None:
        key = "annotation_id" if table == self.annotations_table else "task_id"
        data = pa.Table.from_pylist(rows, schema=schema).sort_by(key)
        if self.lake.exists(table):
            current = self.lake.read(table)
            if current.schema.equals(schema) and current.sort_by(key).equals(data):
                return None
        return self.lake.overwrite(table, data, self.metadata)

    # -- webhook events: one annotation at a time ---------------------------------------

    def upsert(self, task: dict[str, Any], annotation: dict[str, Any]) -> bool:
        """Records a created or updated annotation; returns whether it is live. One that was
        skipped, or whose result gives no value, is removed like a deleted one."""
        row = annotation_row(task, annotation, self.kind)
        if row is None:
            self.delete([int(annotation["id"])])
            return False
        data = pa.Table.from_pylist([row], schema=self.kind.annotations_schema)
        with self.lock:
            if not self.lake.exists(self.annotations_table):
                self.lake.append(self.annotations_table, data, self.metadata)
            else:
                self._commit(
                    self.annotations_table,
                    lambda dt, props: (
                        dt.merge(
                            data,
                            "t.annotation_id = s.annotation_id",
                            source_alias="s",
                            target_alias="t",
                            commit_properties=props,
                            post_commithook_properties=KEEP_LOG,
                        )
                        # events may arrive out of order: an older state never replaces a newer
                        .when_matched_update_all(
                            predicate="t.updated_at IS NULL OR s.updated_at >= t.updated_at"
                        )
                        .when_not_matched_insert_all()
                        .execute()
                    ),
                )
            self._refresh_labels([row["task_id"]], [])
        return True

    def delete(self, annotation_ids: Iterable[int]) -> int:
        """Removes annotations; returns how many rows of annotations/<source> went."""
        ids = sorted({int(i) for i in annotation_ids})
        if not ids:
            return 0
        removed = 0
        with self.lock:
            tasks: list[int] = []
            if self.lake.exists(self.annotations_table):
                hit = self._rows(self.annotations_table, pc.field("annotation_id").isin(ids))
                tasks = sorted({r["task_id"] for r in hit})
                if hit:
                    where = f"annotation_id IN ({_ints(ids)})"
                    self._commit(
                        self.annotations_table,
                        lambda dt, props: dt.delete(
                            where, commit_properties=props, post_commithook_properties=KEEP_LOG
                        ),
                    )
                    removed = len(hit)
            self._refresh_labels(tasks, ids)
        return removed

    def _refresh_labels(self, task_ids: list[int], dropped: list[int]) -> None:
        """Makes the labels rows of ``task_ids`` (and of any row naming an annotation in
        ``dropped``) agree with annotations/<source>, in one commit."""
        live: list[dict[str, Any]] = []
        if task_ids and self.lake.exists(self.annotations_table):
            live = self._rows(self.annotations_table, pc.field("task_id").isin(task_ids))
        data = pa.Table.from_pylist(label_rows(live, self.kind), schema=self.kind.labels_schema)
        if not self.lake.exists(self.labels_table):
            if data.num_rows:
                self.lake.append(self.labels_table, data, self.metadata)
            return
        stale = " OR ".join(
            f"t.{column} IN ({_ints(ids)})"
            for column, ids in (("task_id", task_ids), ("annotation_id", dropped))
            if ids
        )
        if not stale:
            return
        self._commit(
            self.labels_table,
            lambda dt, props: (
                dt.merge(
                    data,
                    "t.task_id = s.task_id",
                    source_alias="s",
                    target_alias="t",
                    commit_properties=props,
                    post_commithook_properties=KEEP_LOG,
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(predicate=stale)
                .execute()
            ),
        )

    def _rows(self, table: str, where: pc.Expression) -> list[dict[str, Any]]:
        return list(self.lake.dataset(table).to_table(filter=where).to_pylist())

    def _commit(self, table: str, write: Any) -> None:
        """Runs ``write(DeltaTable, CommitProperties)``, again on a fresh table when another
        process committed in between; a failed commit leaves nothing behind."""
        schema = (
            self.kind.labels_schema if table == self.labels_table else self.kind.annotations_schema
        )
        props = CommitProperties(custom_metadata={LINEAGE_KEY: json.dumps(self.metadata)})
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            dt = self.lake.table(table)
            have = pa.schema(dt.schema().to_arrow())
            if [(f.name, f.type) for f in have] != [(f.name, f.type) for f in schema]:
                raise StoreError(
                    f"table {table!r} holds labels of another task type than "
                    f"{self.kind.name!r}; `harvest label pull` rewrites it from Label Studio"
                )
            try:
                write(dt, props)
                return
            except CommitFailedError:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * attempt)


def _ints(values: Iterable[int]) -> str:
    return ", ".join(str(int(v)) for v in values)
