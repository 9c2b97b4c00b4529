from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from ingestion.lake import Lake, LakeError
from ingestion.schema import PROVENANCE_COLUMNS, content_sha256
from ingestion.writer import BatchWriter


def row(i: int, body: object = "text") -> dict[str, object]:
    return {"url": f"http://x/{i}", "source": "t", "body": body, "content_sha256": str(i)}


def test_batches_commit_whole_and_last_partial_on_flush(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    writer = BatchWriter(lake, "raw/t", batch_size=4, field_types={"body": pa.string()})
    committed = [writer.add(row(i)) for i in range(10)]
    assert committed.count(True) == 2
    assert lake.read("raw/t").num_rows == 8
    writer.flush()
    table = lake.read("raw/t")
    assert table.num_rows == 10
    assert lake.version("raw/t") == 2  # create + 2 appends: three commits, one per batch
    assert set(PROVENANCE_COLUMNS) <= set(table.column_names)


def test_a_bad_batch_commits_nothing(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    writer = BatchWriter(lake, "raw/t", batch_size=3, field_types={"body": pa.string()})
    for i in range(3):
        writer.add(row(i))
    writer.add(row(3))
    writer.add(row(4, body={"not": "a string"}))
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        writer.flush()
    assert lake.read("raw/t").num_rows == 3
    assert len(writer.buffer) == 2  # kept, not lost


def test_arrow_tables_coalesce_into_commits_of_the_batch_size(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    writer = BatchWriter(lake, "raw/t", batch_size=20, field_types={"body": pa.string()})
    chunks = [pa.Table.from_pylist([row(i) for i in range(k, k + 10)]) for k in range(0, 50, 10)]
    committed = [writer.add_table(chunk) for chunk in chunks]
    assert committed == [False, True, False, True, False]  # at 20 and at 40 rows
    writer.add(row(50))  # a row and a table in one batch
    writer.add_table(pa.Table.from_pylist([{**row(51), "extra": 7}]))
    writer.flush()
    table = lake.read("raw/t")
    assert sorted(table["url"].to_pylist()) == sorted(f"http://x/{i}" for i in range(52))
    assert (writer.rows_committed, writer.batches_committed) == (52, 3)
    assert lake.version("raw/t") == 2
    assert [v for v in table["extra"].to_pylist() if v is not None] == [7]
    assert lake.table("raw/t").get_add_actions(flatten=True).num_rows == 3
    stats = pa.table(lake.table("raw/t").get_add_actions(flatten=True)).to_pylist()
    assert all(s["min.url"] and s["null_count.body"] == 0 for s in stats)  # readers can skip


def test_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LakeError, match="no table 'curated/none'"):
        Lake(tmp_path).read("curated/none")


def test_new_files_since_a_version(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.append("t", pa.table({"a": [1]}))
    lake.append("t", pa.table({"a": [2]}))
    assert len(lake.new_files("t", None)) == 2
    assert len(lake.new_files("t", 0)) == 1
    assert lake.new_files("t", 1) == []


def test_commit_metadata_round_trips(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    v = lake.overwrite("d", pa.table({"a": [1]}), {"tables": {"curated/x": 3}})
    assert lake.metadata("d", v) == {"tables": {"curated/x": 3}}


def test_content_hash_ignores_key_order_and_sees_changes() -> None:
    assert content_sha256({"a": 1, "b": "x"}) == content_sha256({"b": "x", "a": 1})
    assert content_sha256({"a": 1}) != content_sha256({"a": 2})


def test_a_data_file_gone_is_a_clear_error_however_the_table_is_read(tmp_path: Path) -> None:
    import os

    lake = Lake(tmp_path)
    lake.append("raw/t", pa.Table.from_pylist([row(i) for i in range(3)]))
    lake.append("raw/t", pa.Table.from_pylist([row(i) for i in range(3, 6)]))
    assert sum(b.num_rows for b in lake.batches("raw/t", batch_size=2)) == 6
    (gone,) = set(lake.table("raw/t").file_uris()) - set(lake.table("raw/t", 0).file_uris())
    os.remove(gone)
    name = Path(gone).name
    with pytest.raises(LakeError, match=rf"'raw/t' version 1 cannot be read: .*{name}"):
        lake.read("raw/t")
    with pytest.raises(LakeError, match=rf"'raw/t' cannot be read: .*{name}"):
        list(lake.batches("raw/t"))
    # a version from before the file was written still reads
    assert lake.read("raw/t", version=0).num_rows == 3
