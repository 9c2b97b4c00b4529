"""Scores a file of texts with a model, in batches, so memory stays flat however long it is.

Parquet, JSONL (``.jsonl``/``.ndjson``) and CSV in; the same kinds out, chosen by the output
file's suffix. Every input column is kept; the model's ``label`` and ``prob_<class>``
columns are added. The output is written beside its final name and moved there at the end,
so a run stopped part way leaves no half file under that name.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.errors import InvalidInputError
from training.pyfunc import TEXT, Scorer

BATCH = 2_048  # rows scored at once
KINDS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


@dataclass(frozen=True)
class Scored:
    rows: int
    output: str
    labels: dict[str, int]  # rows per predicted label


def kind_of(path: Path) -> str:
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(
            f"{path}: unknown file kind {path.suffix or '(no suffix)'!r}; one of "
            f"{', '.join(sorted(KINDS))}"
        )
    return kind


def total_rows(path: Path) -> int | None:
    """Rows in ``path`` when that is cheap to know (Parquet's footer), else None."""
    return pq.ParquetFile(path).metadata.num_rows if kind_of(path) == "parquet" else None


def batches(path: Path, column: str, size: int = BATCH) -> Iterator[pd.DataFrame]:
    """``path`` a batch at a time, each checked to have the text ``column``."""
    if not path.is_file():
        raise InvalidInputError(f"no input file {path}")
    kind = kind_of(path)
    if kind == "parquet":
        parts: Iterator[pd.DataFrame] = (
            b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=size)
        )
    elif kind == "jsonl":
        parts = pd.read_json(path, lines=True, chunksize=size, dtype=False)
    else:
        parts = pd.read_csv(path, chunksize=size, dtype={column: str}, keep_default_na=False)
    for frame in parts:
        if column not in frame.columns:
            raise InvalidInputError(
                f"{path} has no {column!r} column (it has {', '.join(map(str, frame.columns))}); "
                "name the text column with --text-column"
            )
        yield frame


def score_file(
    scorer: Scorer,
    source: Path,
    output: Path,
    column: str = TEXT,
    size: int = BATCH,
    advance: Callable[[int], None] | None = None,
) -> Scored:
    kind = kind_of(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.part")
    rows, labels = 0, dict.fromkeys(scorer.classes, 0)
    writer: pq.ParquetWriter | None = None
    try:
        with contextlib.ExitStack() as stack:
            text_out = (
                None if kind == "parquet" else stack.enter_context(open(tmp, "w", encoding="utf-8"))
            )
            for frame in batches(source, column, size):
                texts = frame[column].astype("string").fillna("").tolist()
                scored = scorer.predict(pd.DataFrame({TEXT: texts}))
                if clash := sorted(set(frame.columns) & set(scored.columns)):
                    raise InvalidInputError(
                        f"{source} already has the column(s) {', '.join(clash)} that scoring "
                        "adds: rename them, or score a file without them"
                    )
                out = pd.concat([frame.reset_index(drop=True), scored], axis=1)
                if kind == "parquet":
                    table = pa.Table.from_pandas(out, preserve_index=False)
                    writer = writer or pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
                elif text_out is None:
                    raise AssertionError(kind)
                elif kind == "jsonl":
                    for record in out.to_dict(orient="records"):
                        text_out.write(json.dumps(record, default=str) + "\n")
                else:
                    out.to_csv(text_out, header=rows == 0, index=False)
                rows += len(out)
                for label, n in scored["label"].value_counts().items():
                    labels[str(label)] += int(n)
                if advance:
                    advance(len(out))
        if writer is not None:
            writer.close()
            writer = None
        elif kind == "parquet":  # no rows: still a file with the columns it would have
            empty = scorer.predict([])
            pq.write_table(pa.Table.from_pandas(empty, preserve_index=False), tmp)
        os.replace(tmp, output)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return Scored(rows, str(output), labels)
