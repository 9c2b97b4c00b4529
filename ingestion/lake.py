"""One lake root holding Delta tables named like ``raw/<source>``."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from ingestion import deltalog
from ingestion.errors import ConflictError, NotFoundError

LINEAGE_KEY = "harvest.lineage"
# delta-rs retries appends that race other writers, but not the creation of a table, and
# gives up under heavy contention; a failed commit leaves nothing behind, so try again
COMMIT_ATTEMPTS = 5
# Time travel to a version needs its commit in the log, and by default delta-rs deletes log
# entries older than 30 days whenever it writes a checkpoint: versions that datasets name
# must stay loadable, so every commit keeps the log whole.
KEEP_LOG = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
MOVES_NO_ROWS = ("OPTIMIZE", "VACUUM START", "VACUUM END")
# Statistics per column chunk, not per page: Delta's file statistics (min, max, null
# count, which readers skip files by) come from the chunks, and page-level statistics
# cost about a third of a write's time on text columns.
WRITER = WriterProperties(default_column_properties=ColumnProperties(statistics_enabled="CHUNK"))


class LakeError(ConflictError):
    """The lake cannot do what was asked in its present state."""


class LakeNotFoundError(NotFoundError, LakeError):
    """A table, version or dataset that does not exist."""


class Lake:
    def __init__(self, root: str | Path):
        self.root = str(root)
        # tables this object appends to: opening a table replays its log, which costs more
        # than a small append, so each append only reads the commits made since the last
        self._writing: dict[str, DeltaTable] = {}

    def uri(self, table: str) -> str:
        if "://" in self.root:
            return f"{self.root.rstrip('/')}/{table}"
        return str(Path(self.root) / table)

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(table))

    def table(
        self, table: str, version: int | None = None, as_of: datetime | str | None = None
    ) -> DeltaTable:
        """The table as of ``version``, or as it was at time ``as_of`` (default: latest)."""
        if version is not None and as_of is not None:
            raise LakeError(f"read of {table!r}: give a version or a time, not both")
        try:
            dt = DeltaTable(self.uri(table), version=version)
        except TableNotFoundError as exc:
            known = ", ".join(self.tables()) or "none yet"
            raise LakeNotFoundError(
                f"no table {table!r} in lake {self.root} (tables: {known})"
            ) from exc
        except (DeltaError, OSError, ValueError) as exc:
            if version is None:
                raise
            latest = self.table(table).version()
            raise LakeNotFoundError(
                f"table {table!r} has no version {version} (versions 0 to {latest}, "
                "unless its log was cleaned up)"
            ) from exc
        if as_of is not None:
            when = _timestamp(as_of, table)
            first = dt.history()[-1]["timestamp"]
            if when.timestamp() * 1000 < first:
                born = datetime.fromtimestamp(first / 1000, UTC).isoformat()
                raise LakeError(
                    f"table {table!r} did not exist at {when.isoformat()} (its oldest version "
                    f"left in the log is from {born})"
                )
            dt.load_as_version(when)
        return dt

    def version(self, table: str) -> int | None:
        return self.table(table).version() if self.exists(table) else None

    def data_version(self, table: str) -> int:
        """The latest version whose commit changed rows: compaction and vacuum commit versions
        that only move or delete files, whose rows are those of the version before."""
        for entry in self.table(table).history():
            if entry.get("operation") not in MOVES_NO_ROWS:
                return int(entry["version"])
        raise LakeError(f"table {table!r} has no version that wrote rows")

    def read(
        self,
        table: str,
        version: int | None = None,
        as_of: datetime | str | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Rows of ``table`` at a pinned ``version`` or time ``as_of`` (default: latest)."""
        dt = self.table(table, version, as_of)
        with self.readable(table, dt.version()):
            return self.dataset(table, dt).to_table(columns=columns)

    def batches(
        self,
        table: str,
        dataset: ds.Dataset | None = None,
        columns: list[str] | None = None,
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        """Streams ``table`` (or ``dataset``, a version of it from ``dataset()``) in batches
        of up to ``batch_size`` rows."""
        dataset = self.dataset(table) if dataset is None else dataset
        with self.readable(table):
            # little read-ahead: Arrow's default buffers up to 16 batches, a memory that
            # grows with the table instead of staying at one batch
            yield from dataset.to_batches(
                columns=columns, batch_size=batch_size, batch_readahead=1, fragment_readahead=1
            )

    @contextmanager
    def readable(self, table: str, version: int | None = None) -> Iterator[None]:
        """Reads of ``table`` inside this block that find a data file gone (a file the log
        names, deleted or vacuumed) fail with a LakeError naming the table, not deep in
        Arrow."""
        try:
            yield
        except FileNotFoundError as exc:
            at = "" if version is None else f" version {version}"
            raise LakeError(
                f"table {table!r}{at} cannot be read: a data file it names is gone "
                f"(vacuumed? see `harvest lake check`): {str(exc).splitlines()[0]}"
            ) from exc

    def dataset(self, table: str, dt: DeltaTable | None = None) -> ds.Dataset:
        """``table`` (or the version of it ``dt`` holds) as a pyarrow dataset, to stream.

        Read through Arrow's own filesystem: deltalake's default is one written in Python,
        whose reader threads can outlive the interpreter and abort it as it exits
        ("terminate called without an active exception").
        """
        dt = self.table(table) if dt is None else dt
        return dt.to_pyarrow_dataset(filesystem=deltalog.table_filesystem(self.uri(table)))

    def append(self, table: str, data: pa.Table, metadata: dict[str, Any] | None = None) -> int:
        """Append ``data`` as one commit; returns the new table version."""
        return self._write(table, data, "append", metadata)

    def overwrite(self, table: str, data: pa.Table, metadata: dict[str, Any] | None = None) -> int:
        return self._write(table, data, "overwrite", metadata)

    def _write(self, table: str, data: pa.Table, mode: str, metadata: dict[str, Any] | None) -> int:
        props = None
        if metadata:
            props = CommitProperties(custom_metadata={LINEAGE_KEY: json.dumps(metadata)})
        if mode == "overwrite":
            write_deltalake(
                self.uri(table),
                data,
                mode="overwrite",
                schema_mode="overwrite",
                writer_properties=WRITER,
                commit_properties=props,
                post_commithook_properties=KEEP_LOG,
            )
        else:
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                try:
                    target = self._for_append(table)
                    where = self.uri(table) if target is None else target
                    write_deltalake(
                        where,
                        data,
                        mode="append",
                        schema_mode="merge",
                        writer_properties=WRITER,
                        commit_properties=props,
                        post_commithook_properties=KEEP_LOG,
                    )
                    break
                except CommitFailedError:
                    self._writing.pop(table, None)
                    if attempt == COMMIT_ATTEMPTS:
                        raise
                    time.sleep(random.uniform(0.05, 0.2) * attempt)
            if target is not None:
                return target.version()  # the write moved it to the version it committed
            self._writing[table] = self.table(table)
            return self._writing[table].version()
        self._writing.pop(table, None)
        return self.table(table).version()

    def _for_append(self, table: str) -> DeltaTable | None:
        """The open table brought up to date with other writers' commits; None if not open."""
        dt = self._writing.get(table)
        if dt is None:
            return None
        try:
            dt.update_incremental()
        except (DeltaError, OSError):
            del self._writing[table]  # deleted or replaced under us: open it afresh
            return None
        return dt

    def metadata(self, table: str, version: int) -> dict[str, Any]:
        """The metadata written with commit ``version`` of ``table``."""
        for entry in self.table(table).history():
            if entry.get("version") == version and LINEAGE_KEY in entry:
                return dict(json.loads(entry[LINEAGE_KEY]))
        return {}

    def new_files(self, table: str, since: int | None, until: int | None = None) -> list[str]:
        """Data files holding the rows appended to ``table`` after version ``since`` (None:
        from the start), up to version ``until`` (None: the latest).

        Read from the commit log rather than by diffing snapshots: a compaction rewrites old
        rows into new files, which a diff would take for new rows.
        """
        dt = self.table(table)
        if since is None and until is None:
            return dt.file_uris()
        uri = self.uri(table)
        try:
            files, retired = deltalog.data_added_since(
                uri, -1 if since is None else since, dt.version() if until is None else until
            )
        except FileNotFoundError as exc:
            raise LakeError(
                f"cannot tell what {table!r} gained since version {since}: its log from there "
                "on was cleaned up"
            ) from exc
        gone = deltalog.missing(uri, set(retired))
        if gone:
            raise LakeError(
                f"{len(gone)} file(s) of rows appended to {table!r} after version {since} were "
                f"compacted and then vacuumed before they were read, e.g. {gone[0]}"
            )
        return files

    def tables(self) -> list[str]:
        if "://" in self.root:
            return deltalog.tables(self.root)
        if not Path(self.root).exists():
            return []
        root = Path(self.root)
        return sorted(str(p.parent.relative_to(root)) for p in root.glob("**/_delta_log"))


def _timestamp(value: datetime | str, table: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise LakeError(f"read of {table!r}: {value!r} is not an ISO 8601 time") from exc
    # a time without a zone is taken as UTC, the zone of the commit timestamps
    return value if value.tzinfo else value.replace(tzinfo=UTC)
