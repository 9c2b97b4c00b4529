"""The streaming loader: shards by rank and worker, shuffles per epoch, resumes mid-epoch,
and reads dataset versions from the lake and from exported folders."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.data import StreamingDataset, StreamingLoader, Uneven

if TYPE_CHECKING:
    from ingestion.lake import Lake

# The rank processes import this module afresh: the lake's modules (and conftest's, which
# load Scrapy) are imported only by the tests that use them, to keep their start short.

TRAIN_ROWS = 1001  # odd: it divides among no number of workers


def shards(folder: Path, rows: int = TRAIN_ROWS, files: int = 3) -> list[str]:
    """An export laid out as Hugging Face shards, several row groups each, of uneven sizes,
    beside a validation shard that a read of train must never touch."""
    ids = [f"t{i:05d}" for i in range(rows)]
    data = folder / "data"
    data.mkdir(parents=True)
    cuts = [0, rows // 5, rows // 2, rows]
    for k in range(files):
        part = ids[cuts[k] : cuts[k + 1]]
        table = pa.table(
            {
                "row_id": part,
                "text": [f"text of {i}" for i in part],
                "label": [f"c{int(i[1:]) % 4}" for i in part],
                "split": ["train"] * len(part),
            }
        )
        pq.write_table(table, data / f"train-{k:05d}-of-{files:05d}.parquet", row_group_size=37)
    val = pa.table(
        {
            "row_id": ["v0", "v1"],
            "text": ["a", "b"],
            "label": ["c0", "c1"],
            "split": ["validation"] * 2,
        }
    )
    pq.write_table(val, data / "validation-00000-of-00001.parquet")
    (folder / "manifest.json").write_text("{}")
    return ids


def ids_of(batches: Any) -> list[str]:
    return [r for b in batches for r in b["row_id"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- 2 ranks x 2 workers, through torch.distributed


def _rank_main(rank: int, world: int, port: int, folder: str, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:

        def epochs(seed: int, n: int) -> tuple[list[list[str]], dict[str, Any]]:
            ds = StreamingDataset.from_folder(
                folder, "train", columns=["row_id"], batch_size=16, seed=seed
            )
            # a spawned process spawns its workers too unless told otherwise: fork is quicker
            loader = ds.loader(num_workers=2, multiprocessing_context="fork")
            batches = [[b["row_id"] for b in loader] for _ in range(n)]
            info = {
                "rank": ds.rank,
                "world": ds.world_size,
                "len": len(loader),
                "batches": [len(e) for e in batches],
            }
            return [ids_of({"row_id": b} for b in e) for e in batches], info

        first, info = epochs(0, 2)
        again, _ = epochs(0, 1)
        other, _ = epochs(1, 1)
        mine = {"first": first, "again": again, "other": other, "info": info}
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def test_two_ranks_two_workers_read_every_row_once_an_epoch(tmp_path: Path) -> None:
    ids = shards(tmp_path / "export")
    out = tmp_path / "read.json"
    mp.spawn(
        _rank_main,
        args=(2, free_port(), str(tmp_path / "export"), str(out)),
        nprocs=2,
        join=True,
    )
    ranks = json.loads(out.read_text())
    assert [r["info"]["rank"] for r in ranks] == [0, 1]  # taken from the process group
    assert all(r["info"]["world"] == 2 for r in ranks)
    for epoch in (0, 1):
        read = [row for r in ranks for row in r["first"][epoch]]
        assert Counter(read) == Counter(ids), f"epoch {epoch}: a row read twice or never"
        sizes = [len(r["first"][epoch]) for r in ranks]
        assert max(sizes) - min(sizes) <= 2  # workers differ by a row at most
    for r in ranks:
        assert r["first"][0] != r["first"][1]  # a new order each epoch
        assert set(r["first"][0]) != set(r["first"][1])  # and new shares
        assert r["again"][0] == r["first"][0]  # the same seed, the same order
        assert r["other"][0] != r["first"][0]
        assert r["info"]["batches"] == [r["info"]["len"]] * 2


# --- uneven splits


@pytest.mark.parametrize("uneven", ["drop", "pad"])
def test_drop_and_pad_give_every_rank_the_same_batches(tmp_path: Path, uneven: Uneven) -> None:
    ids = shards(tmp_path / "export")
    per_rank = []
    for rank in (0, 1):
        ds = StreamingDataset.from_folder(
            tmp_path / "export",
            columns=["row_id"],
            batch_size=16,
            uneven=uneven,
            rank=rank,
            world_size=2,
        )
        loader = ds.loader(num_workers=2)
        batches = [b["row_id"] for b in loader]
        assert len(batches) == len(loader)
        per_rank.append(batches)
    assert len(per_rank[0]) == len(per_rank[1])
    assert [len(b) for b in per_rank[0]] == [len(b) for b in per_rank[1]]
    read = Counter(r for batches in per_rank for b in batches for r in b)
    if uneven == "drop":
        assert sum(read.values()) == 4 * (TRAIN_ROWS // 4) and max(read.values()) == 1
    else:
        assert sum(read.values()) == 4 * -(-TRAIN_ROWS // 4) and set(read) == set(ids)


def test_without_shuffle_rows_come_in_stored_order(tmp_path: Path) -> None:
    ids = shards(tmp_path / "export")
    ds = StreamingDataset.from_folder(tmp_path / "export", columns=["row_id"], shuffle=False)
    assert [row["row_id"] for row in ds] == ids


# --- resuming


def test_resume_with_workers_yields_exactly_the_rest(tmp_path: Path) -> None:
    shards(tmp_path / "export")

    def make() -> StreamingLoader:
        ds = StreamingDataset.from_folder(tmp_path / "export", batch_size=8, seed=3)
        return ds.loader(num_workers=2)

    whole = make()
    ids_of(whole)  # epoch 0
    full = [b["row_id"] for b in whole]  # epoch 1, uninterrupted

    first = make()
    ids_of(first)
    taken = []
    for batch in first:
        taken.append(batch["row_id"])
        if len(taken) == 10:
            break
    # the state crosses a process boundary as JSON
    state = json.loads(json.dumps(first.state_dict()))
    assert state["epoch"] == 1 and sum(state["consumed"].values()) == 80

    resumed = make()
    resumed.load_state_dict(state)
    rest = [b["row_id"] for b in resumed]
    assert taken == full[:10]
    # an even number of batches taken from two workers: the interleaving goes on alike
    assert rest == full[10:]
    assert resumed.epoch == 2 and resumed.state_dict()["consumed"] == {}
    assert Counter(r for b in taken + rest for r in b) == Counter(r for b in full for r in b)


def test_resume_in_process_with_a_shuffle_window(tmp_path: Path) -> None:
    shards(tmp_path / "export")

    def make() -> StreamingDataset:
        return StreamingDataset.from_folder(
            tmp_path / "export", columns=["row_id"], batch_size=10, shuffle_window=3, seed=9
        )

    full = ids_of(make())
    unmixed = ids_of(
        StreamingDataset.from_folder(tmp_path / "export", columns=["row_id"], batch_size=10, seed=9)
    )
    assert full != unmixed and sorted(full) == sorted(unmixed)  # the window mixes rows
    ds = make()
    taken: list[str] = []
    for batch in ds:
        taken += batch["row_id"]
        if len(taken) == 430:  # past whole windows and into one
            break
    resumed = make()
    resumed.load_state_dict(ds.state_dict())
    assert taken + ids_of(resumed) == full
    # the same object goes on where the loop left it, too
    assert taken + ids_of(ds) == full


def test_resume_with_other_workers_or_data_is_refused(tmp_path: Path) -> None:
    shards(tmp_path / "export")
    ds = StreamingDataset.from_folder(tmp_path / "export", batch_size=8)
    loader = ds.loader(num_workers=2)
    next(iter(loader))
    state = loader.state_dict()
    other = StreamingDataset.from_folder(tmp_path / "export", batch_size=8)
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="2 worker"):
        next(iter(other.loader(num_workers=1)))
    reseeded = StreamingDataset.from_folder(tmp_path / "export", batch_size=8, seed=1)
    with pytest.raises(ValueError, match="seed"):
        reseeded.load_state_dict(state)


# --- sources


def cut_versions(tmp_path: Path) -> tuple[Lake, int, int]:
    from ingestion.datasets import cut_dataset
    from ingestion.lake import Lake

    lake = Lake(tmp_path / "lake")
    n = 300
    hashes = [f"h{i:03d}" for i in range(n)]
    lake.append(
        "curated/s",
        pa.table(
            {
                "content_sha256": hashes,
                "source": ["s"] * n,
                "url": [f"u{i}" for i in range(n)],
                "body": [f"body {i}" for i in range(n)],
            }
        ),
    )
    lake.overwrite(
        "labels/s",
        pa.table({"row_id": hashes, "label": [f"c{i % 3}" for i in range(n)]}),
    )
    v0 = cut_dataset(lake, "d", "s", "labels/s", "body", seed=0).version
    v1 = cut_dataset(lake, "d", "s", "labels/s", "body", seed=1).version
    return lake, v0, v1


def split_rows(table: pa.Table, split: str) -> Counter[tuple[str, str, str]]:
    rows = table.to_pylist()
    return Counter((r["row_id"], r["text"], r["label"]) for r in rows if r["split"] == split)


def test_reads_a_pinned_lake_version(tmp_path: Path) -> None:
    from ingestion.datasets import SPLITS, read_dataset

    lake, v0, v1 = cut_versions(tmp_path)
    for version in (v0, v1):
        stored, meta = read_dataset(lake, "d", version)
        for split in SPLITS:
            ds = StreamingDataset.from_lake(
                lake, "d", version, split, columns=["row_id", "text", "label"], batch_size=7
            )
            assert ds.meta["version"] == version and ds.meta["seed"] == meta["seed"]
            loader = ds.loader(num_workers=2)
            read = Counter(
                (r, t, lab)
                for b in loader
                for r, t, lab in zip(b["row_id"], b["text"], b["label"], strict=True)
            )
            assert read == split_rows(stored, split)
    # the two cuts split alike-sized but different rows: the version pinned is the one read
    train0 = set(ids_of(StreamingDataset.from_lake(lake, "d", v0, batch_size=50)))
    train1 = set(ids_of(StreamingDataset.from_lake(lake, "d", v1, batch_size=50)))
    assert len(train0) == len(train1) and train0 != train1


def test_reads_an_exported_folder(tmp_path: Path) -> None:
    from ingestion.datasets import SPLITS, read_dataset
    from ingestion.export import export_version

    lake, v0, _ = cut_versions(tmp_path)
    out = export_version(lake, "d", tmp_path / "export", version=v0).out
    stored, _ = read_dataset(lake, "d", v0)
    for split in SPLITS:
        ds = StreamingDataset.from_folder(out, split, columns=["row_id", "text", "label"])
        assert Counter((r["row_id"], r["text"], r["label"]) for r in ds) == split_rows(
            stored, split
        )


def test_folder_without_split_names_filters_on_the_split_column(tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(50)]
    split = ["train" if i % 5 else "test" for i in range(50)]
    table = pa.table({"row_id": ids, "n": list(range(50)), "split": split})
    (tmp_path / "f").mkdir()
    pq.write_table(table.slice(0, 20), tmp_path / "f" / "part-0.parquet", row_group_size=6)
    pq.write_table(table.slice(20), tmp_path / "f" / "part-1.parquet", row_group_size=6)
    ds = StreamingDataset.from_folder(tmp_path / "f", "test", batch_size=4)
    batches = list(ds)
    assert sorted(ids_of(batches)) == sorted(
        i for i, s in zip(ids, split, strict=True) if s == "test"
    )
    assert all(isinstance(b["n"], torch.Tensor) for b in batches)  # numbers come as tensors
    with pytest.raises(LookupError, match="validation"):
        StreamingDataset.from_folder(tmp_path / "f", "validation")


def test_transform_runs_on_each_batch(tmp_path: Path) -> None:
    shards(tmp_path / "export")
    ds = StreamingDataset.from_folder(
        tmp_path / "export", batch_size=32, as_arrow=True, transform=_label_tensor
    )
    # spawned workers: the dataset and its transform travel pickled
    out = list(ds.loader(num_workers=2, multiprocessing_context="spawn"))
    assert all(isinstance(y, torch.Tensor) and y.dtype == torch.long for y in out)
    assert sum(len(y) for y in out) == TRAIN_ROWS
    assert torch.cat(out).bincount().tolist() == [251, 250, 250, 250]


def _label_tensor(table: pa.Table) -> torch.Tensor:
    return torch.tensor([int(x[1:]) for x in table["label"].to_pylist()])
