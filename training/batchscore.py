"""Scores a file of texts with a model, in batches, so memory stays flat however long it is.

Parquet, JSONL (``.jsonl``/``.ndjson``) and CSV in; the same kinds out, chosen by the output
file's suffix. Every input column is kept; the model's ``label`` and ``prob_<class>``
columns are added. The output is written beside its final name and moved there at the end,
so a run stopped part way, or one that meets a bad row, leaves no half file under that name.

A file is read a batch at a time, so a bad row is met where it lies: the error names the
file, the row (and a JSONL line) and what is wrong with it. The first batch fixes the
columns of a Parquet or CSV output and, for Parquet, their types; a later row that brings
a column of its own or a value that does not fit its type is such an error.
"""

from __future__ import annotations

import contextlib
import glob
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
    if kind_of(path) != "parquet":
        return None
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInputError(f"{path} is not a Parquet file that can be read: {exc}") from None


def batches(path: Path, column: str, size: int = BATCH) -> Iterator[pd.DataFrame]:
    """``path`` a batch at a time, each checked to have the text ``column`` holding texts."""
    if not path.is_file():
        raise InvalidInputError(f"no input file {path}")
    kind = kind_of(path)
    parts: Iterator[pd.DataFrame]
    if kind == "parquet":
        parts = _parquet(path, size)
    elif kind == "jsonl":
        parts = _jsonl(path, size)
    else:
        parts = _csv(path, size, column)
    first = 0  # rows before this batch
    for frame in parts:
        if column not in frame.columns and first:  # JSONL rows that leave the text out
            frame[column] = None
        if column not in frame.columns:
            raise InvalidInputError(
                f"{path} has no {column!r} column (it has {', '.join(map(str, frame.columns))}); "
                "name the text column with --text-column"
            )
        for i, value in enumerate(frame[column].tolist()):
            if not (isinstance(value, str) or _missing(value)):
                raise InvalidInputError(
                    f"{path} row {first + i + 1}: {column!r} is {value!r}, not a text"
                )
        first += len(frame)
        yield frame


def _missing(value: object) -> bool:
    """None, NaN or pandas' NA: a text not given, scored as empty."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _parquet(path: Path, size: int) -> Iterator[pd.DataFrame]:
    try:
        for b in pq.ParquetFile(path).iter_batches(batch_size=size):
            yield b.to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInputError(f"{path} is not a Parquet file that can be read: {exc}") from None


def _jsonl(path: Path, size: int) -> Iterator[pd.DataFrame]:
    """A JSON object a line, blank lines skipped; a line that is not one is an error
    naming it (pandas' reader named only a position in its chunk)."""
    records: list[dict[str, object]] = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:  # UnicodeDecodeError included
                raise InvalidInputError(f"{path} line {number}: not JSON: {exc}") from None
            if not isinstance(record, dict):
                raise InvalidInputError(
                    f"{path} line {number}: a JSON object a line, not {type(record).__name__}"
                )
            records.append(record)
            if len(records) == size:
                yield pd.DataFrame.from_records(records)
                records = []
    if records:
        yield pd.DataFrame.from_records(records)


def _csv(path: Path, size: int, column: str) -> Iterator[pd.DataFrame]:
    try:
        yield from pd.read_csv(path, chunksize=size, dtype={column: str}, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} is not CSV that can be read: {exc}") from None


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
    _sweep(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.part")
    rows, labels = 0, dict.fromkeys(scorer.classes, 0)
    writer: pq.ParquetWriter | None = None
    columns: list[str] | None = None  # the input's, as the first batch had them
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
                if kind != "jsonl":  # a file of fixed columns
                    columns = columns if columns is not None else list(frame.columns)
                    frame = _fitted(frame, columns, source, rows)
                out = pd.concat([frame.reset_index(drop=True), scored], axis=1)
                if kind == "parquet":
                    if writer is None:
                        schema = _settled(pa.Schema.from_pandas(out, preserve_index=False))
                        writer = pq.ParquetWriter(tmp, schema)
                    writer.write_table(_typed(out, writer.schema, source, rows))
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


def _fitted(frame: pd.DataFrame, columns: list[str], source: Path, before: int) -> pd.DataFrame:
    """``frame`` with the first batch's ``columns``: one it lacks is empty; one of its own
    has nowhere to go."""
    if extra := [c for c in frame.columns if c not in columns]:
        raise InvalidInputError(
            f"{source} rows {before + 1}-{before + len(frame)}: column(s) {', '.join(extra)} "
            f"that the rows before did not have, and the output's columns are set: give "
            "every row every column, or write JSONL"
        )
    return frame if list(frame.columns) == columns else frame.reindex(columns=columns)


def _settled(schema: pa.Schema) -> pa.Schema:
    """A column with no value in the first batch is taken as text."""
    return pa.schema(
        [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema],
        metadata=schema.metadata,
    )


def _typed(out: pd.DataFrame, schema: pa.Schema, source: Path, before: int) -> pa.Table:
    """``out`` as a table of the Parquet file's ``schema``."""
    where = f"{source} rows {before + 1}-{before + len(out)}"
    try:
        table = pa.Table.from_pandas(out, preserve_index=False)
    except (pa.ArrowException, ValueError) as exc:
        raise InvalidInputError(f"{where}: a column mixes types: {exc}") from None
    try:
        return table.cast(schema)
    except (pa.ArrowException, ValueError) as exc:
        raise InvalidInputError(
            f"{where}: a column's type differs from the rows before ({exc}); Parquet holds one "
            "type a column: make them alike, or write JSONL"
        ) from None


def _sweep(output: Path) -> None:
    """Removes the part files of ``output`` that runs killed outright (SIGKILL, a lost
    machine) left behind; a live run's is its own."""
    for part in output.parent.glob(f".{glob.escape(output.name)}.*.part"):
        pid = part.name[len(output.name) + 2 : -len(".part")]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            part.unlink(missing_ok=True)
        except PermissionError:  # another user's live process
            pass
