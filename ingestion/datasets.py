"""Dataset versions: labelled curated rows, split once, pinned to their source table versions."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ingestion.lake import LINEAGE_KEY, Lake, LakeError

SPLITS = ("train", "validation", "test")
SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
    ]
)


@dataclass
class DatasetVersion:
    name: str
    version: int
    rows: int
    lineage: dict[str, Any]
    reused: bool = False


def stratified_split(
    labels: list[str], fractions: tuple[float, float, float], seed: int
) -> list[str]:
    """A split name for each position, with every class spread over the splits alike."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    out = [""] * len(labels)
    for label in sorted(by_class):
        idx = by_class[label]
        rng.shuffle(idx)
        n = len(idx)
        n_val = round(n * fractions[1])
        n_test = round(n * fractions[2])
        n_train = max(0, n - n_val - n_test)
        for j, i in enumerate(idx):
            out[i] = "train" if j < n_train else "validation" if j < n_train + n_val else "test"
    return out


def cut_dataset(
    lake: Lake,
    name: str,
    source: str,
    labels_table: str,
    text_field: str,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> DatasetVersion:
    """Joins curated rows with their labels and writes a new version of ``datasets/<name>``.

    The same inputs (table versions, seed, fractions) give back the version already cut.
    """
    curated_table = f"curated/{source}"
    for table in (curated_table, labels_table):
        if not lake.exists(table):
            raise LakeError(f"cannot cut dataset {name!r}: table {table!r} does not exist yet")
    # a compaction's version holds the same rows as the one before: it cuts nothing new
    curated_v = lake.data_version(curated_table)
    labels_v = lake.data_version(labels_table)
    lineage: dict[str, Any] = {
        "tables": {curated_table: curated_v, labels_table: labels_v},
        "curated": curated_table,
        "labels": labels_table,
        "seed": seed,
        "fractions": list(fractions),
        "text_field": text_field,
    }
    table = f"datasets/{name}"
    if lake.exists(table):
        latest, stored = dataset_lineage(lake, name)
        if _inputs(stored) == lineage:
            rows = lake.read(table, columns=["row_id"]).num_rows
            return DatasetVersion(name, latest, rows, stored, reused=True)

    data = build_dataset(lake, name, lineage)
    # the hash lets a rebuild be checked even where the stored files are gone
    lineage["content_sha256"] = table_sha256(data)
    version = lake.overwrite(table, data, lineage)
    return DatasetVersion(name, version, data.num_rows, lineage)


def build_dataset(lake: Lake, name: str, lineage: dict[str, Any]) -> pa.Table:
    """The rows of a dataset version, from the exact input versions its lineage names."""
    inputs = _inputs(lineage)
    curated_table, labels_table = inputs["curated"], inputs["labels"]
    text_field = inputs["text_field"]
    curated = lake.read(curated_table, inputs["tables"][curated_table]).select(
        ["content_sha256", "source", "url", text_field]
    )
    labels = lake.read(labels_table, inputs["tables"][labels_table]).select(["row_id", "label"])
    text_of = {
        h: (src, url, text)
        for h, src, url, text in zip(
            *(curated[c].to_pylist() for c in curated.column_names), strict=True
        )
    }
    rows = []
    for row_id, label in sorted(
        zip(labels["row_id"].to_pylist(), labels["label"].to_pylist(), strict=True)
    ):
        if row_id in text_of and label:
            src, url, text = text_of[row_id]
            rows.append({"row_id": row_id, "source": src, "url": url, "text": text, "label": label})
    if not rows:
        raise LakeError(
            f"cannot cut dataset {name!r}: no row of {curated_table} has a label in {labels_table}"
        )
    fractions = inputs["fractions"]
    splits = stratified_split(
        [r["label"] for r in rows], (fractions[0], fractions[1], fractions[2]), inputs["seed"]
    )
    for row, split in zip(rows, splits, strict=True):
        row["split"] = split
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _inputs(lineage: dict[str, Any]) -> dict[str, Any]:
    """What a cut depends on; lineages written before they named their inputs by role name
    them by table prefix."""
    tables = dict(lineage.get("tables", {}))
    curated = lineage.get("curated") or next((t for t in tables if t.startswith("curated/")), None)
    labels = lineage.get("labels") or next((t for t in tables if t != curated), None)
    return {
        "tables": tables,
        "curated": curated,
        "labels": labels,
        "seed": lineage.get("seed"),
        "fractions": lineage.get("fractions"),
        "text_field": lineage.get("text_field"),
    }


def dataset_lineage(
    lake: Lake, name: str, version: int | None = None
) -> tuple[int, dict[str, Any]]:
    """The version that cut what ``datasets/<name>`` holds at ``version`` (default: latest),
    and its lineage. Compaction and vacuum commit versions of their own that change no rows
    and carry no lineage; they belong to the cut before them."""
    table = f"datasets/{name}"
    if not lake.exists(table):
        raise LakeError(f"no dataset {name!r} in lake {lake.root} (run `harvest train` first)")
    at = lake.table(table, version).version()
    for entry in lake.table(table).history():
        if entry["version"] <= at and LINEAGE_KEY in entry:
            return int(entry["version"]), dict(json.loads(entry[LINEAGE_KEY]))
    raise LakeError(f"dataset {name!r} version {at} has no lineage in its commit log")


def dataset_versions(lake: Lake, name: str) -> list[tuple[int, dict[str, Any]]]:
    """Every version cut of ``datasets/<name>`` still in its log, oldest first."""
    out = [
        (int(e["version"]), dict(json.loads(e[LINEAGE_KEY])))
        for e in lake.table(f"datasets/{name}").history()
        if LINEAGE_KEY in e
    ]
    return sorted(out, key=lambda item: item[0])


def table_sha256(table: pa.Table) -> str:
    """A hash of an Arrow table's column names, types and values in row order, the same
    however its buffers are chunked or laid out."""
    h = hashlib.sha256()
    h.update(json.dumps([[f.name, str(f.type)] for f in table.schema]).encode())
    for batch in table.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            h.update(b"\n" + json.dumps(row, default=str, ensure_ascii=False).encode())
    return h.hexdigest()


@dataclass
class Rebuild:
    name: str
    version: int
    rows: int
    lineage: dict[str, Any]
    sha256: str
    stored_sha256: str | None  # None where the stored version can no longer be read
    recorded_sha256: str | None  # None for versions cut before the hash was recorded
    table: pa.Table

    @property
    def identical(self) -> bool:
        known = [h for h in (self.stored_sha256, self.recorded_sha256) if h is not None]
        return bool(known) and all(h == self.sha256 for h in known)


def rebuild_dataset(lake: Lake, name: str, version: int | None = None) -> Rebuild:
    """Cuts dataset version ``version`` again from the input versions it names, and hashes
    it beside the stored version."""
    cut_version, lineage = dataset_lineage(lake, name, version)
    rebuilt = build_dataset(lake, name, lineage)
    try:
        stored_sha: str | None = table_sha256(lake.read(f"datasets/{name}", cut_version))
    except LakeError:
        stored_sha = None
    return Rebuild(
        name, cut_version, rebuilt.num_rows, lineage, table_sha256(rebuilt), stored_sha,
        lineage.get("content_sha256"), rebuilt,
    )  # fmt: skip


def read_dataset(
    lake: Lake, name: str, version: int | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    cut_version, lineage = dataset_lineage(lake, name, version)
    return lake.read(f"datasets/{name}", cut_version), {"version": cut_version, **lineage}
