"""One lake root holding Delta tables named like ``raw/<source>``."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

LINEAGE_KEY = "harvest.lineage"
# delta-rs retries appends that race other writers, but not the creation of a table, and
# gives up under heavy contention; a failed commit leaves nothing behind, so try again
COMMIT_ATTEMPTS = 5


class LakeError(RuntimeError):
    pass


class Lake:
    def __init__(self, root: str | Path):
        self.root = str(root)

    def uri(self, table: str) -> str:
        if "://" in self.root:
            return f"{self.root.rstrip('/')}/{table}"
        return str(Path(self.root) / table)

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(table))

    def table(self, table: str, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(self.uri(table), version=version)
        except TableNotFoundError as exc:
            raise LakeError(f"no table {table!r} in lake {self.root}") from exc

    def version(self, table: str) -> int | None:
        return self.table(table).version() if self.exists(table) else None

    def read(self, table: str, version: int | None = None) -> pa.Table:
        return self.table(table, version).to_pyarrow_table()

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
                self.uri(table), data, mode="overwrite", schema_mode="overwrite",
                commit_properties=props,
            )  # fmt: skip
        else:
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                try:
                    write_deltalake(
                        self.uri(table), data, mode="append", schema_mode="merge",
                        commit_properties=props,
                    )  # fmt: skip
                    break
                except CommitFailedError:
                    if attempt == COMMIT_ATTEMPTS:
                        raise
                    time.sleep(random.uniform(0.05, 0.2) * attempt)
        return self.table(table).version()

    def metadata(self, table: str, version: int) -> dict[str, Any]:
        """The metadata written with commit ``version`` of ``table``."""
        for entry in self.table(table).history():
            if entry.get("version") == version and LINEAGE_KEY in entry:
                return dict(json.loads(entry[LINEAGE_KEY]))
        return {}

    def new_files(self, table: str, since: int | None) -> list[str]:
        """Data files added to an append-only table after version ``since``."""
        current = self.table(table).file_uris()
        if since is None:
            return current
        old = set(self.table(table, since).file_uris())
        return [f for f in current if f not in old]

    def tables(self) -> list[str]:
        if "://" in self.root or not Path(self.root).exists():
            return []
        root = Path(self.root)
        return sorted(str(p.parent.relative_to(root)) for p in root.glob("**/_delta_log"))
