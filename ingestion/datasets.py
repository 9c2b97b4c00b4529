"""Dataset versions: labelled curated rows, split once, pinned to their source table versions."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ingestion.lake import Lake, LakeError

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
    curated_v = lake.table(curated_table).version()
    labels_v = lake.table(labels_table).version()
    lineage = {
        "tables": {curated_table: curated_v, labels_table: labels_v},
        "seed": seed,
        "fractions": list(fractions),
        "text_field": text_field,
    }
    table = f"datasets/{name}"
    if lake.exists(table):
        latest = lake.table(table).version()
        if lake.metadata(table, latest) == lineage:
            rows = lake.table(table).to_pyarrow_table(columns=["row_id"]).num_rows
            return DatasetVersion(name, latest, rows, lineage, reused=True)

    curated = lake.read(curated_table, curated_v).select(
        ["content_sha256", "source", "url", text_field]
    )
    labels = lake.read(labels_table, labels_v).select(["row_id", "label"])
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
    splits = stratified_split([r["label"] for r in rows], fractions, seed)
    for row, split in zip(rows, splits, strict=True):
        row["split"] = split
    version = lake.overwrite(table, pa.Table.from_pylist(rows, schema=SCHEMA), lineage)
    return DatasetVersion(name, version, len(rows), lineage)


def read_dataset(
    lake: Lake, name: str, version: int | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    table = f"datasets/{name}"
    if not lake.exists(table):
        raise LakeError(f"no dataset {name!r} in lake {lake.root} (run `harvest train` first)")
    dt = lake.table(table, version)
    v = dt.version()
    return dt.to_pyarrow_table(), {"version": v, **lake.metadata(table, v)}
