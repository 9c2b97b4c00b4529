"""Loader benchmark: rows/s of the streaming loader (``training.data``) over a split on disk,
against a DataLoader over the same rows held in memory, each turning its batches into the
same tensors with the same featuriser and the same number of workers.

    python -m bench.loader       # 200,000 rows; export, lake; none, bytes, ngrams; 0, 2 workers
    python -m bench.loader --rows 20000 --featurise none --workers 0   # a check
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from training.data import StreamingDataset
from training.features import encode

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "loader.json"
CLASSES = ("World", "Sports", "Business", "Sci/Tech")
FEATURISERS = ("none", "bytes", "ngrams")
SOURCES = ("export", "lake")
BYTES = 128  # the "bytes" featuriser's fixed width
BUCKETS = 2**18
SHARDS = 4
ROW_GROUP = 16_384


# --- featurisers: a batch of texts and label indices to what a model takes


class Featurise:
    """Picklable, so spawned workers can take it; ``kind`` is one of ``FEATURISERS``."""

    def __init__(self, kind: str):
        if kind not in FEATURISERS:
            raise ValueError(f"featurise must be one of {FEATURISERS}, not {kind!r}")
        self.kind = kind

    def __call__(self, texts: list[str], labels: torch.Tensor) -> tuple[Any, ...]:
        if self.kind == "none":
            return texts, labels
        if self.kind == "bytes":
            out = np.zeros((len(texts), BYTES), dtype=np.uint8)
            for i, text in enumerate(texts):
                raw = text.encode()[:BYTES]
                out[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
            return torch.from_numpy(out), labels
        ids, offsets = encode(texts, BUCKETS)
        return ids, offsets, labels


class FromArrow:
    """The streaming side: an Arrow batch to the featuriser's input, labels by vector."""

    def __init__(self, featurise: Featurise):
        self.featurise = featurise
        self.classes = pa.array(CLASSES)

    def __call__(self, table: pa.Table) -> tuple[Any, ...]:
        labels = pc.index_in(table["label"], value_set=self.classes).to_numpy()
        return self.featurise(table["text"].to_pylist(), torch.from_numpy(labels.astype(np.int64)))


class FromPairs:
    """The in-memory side's collate: (text, label index) pairs to the featuriser's input."""

    def __init__(self, featurise: Featurise):
        self.featurise = featurise

    def __call__(self, pairs: list[tuple[str, int]]) -> tuple[Any, ...]:
        texts = [t for t, _ in pairs]
        return self.featurise(texts, torch.tensor([y for _, y in pairs], dtype=torch.long))


# --- data


def synthetic(rows: int, seed: int = 0) -> pa.Table:
    """Article-shaped rows: 40 to 90 words of 2 to 9 letters (some 250 to 600 characters)."""
    rng = np.random.default_rng(seed)
    vocab = np.array(
        [
            "".join(chr(97 + c) for c in rng.integers(0, 26, size=rng.integers(2, 10)))
            for _ in range(5000)
        ]
    )
    lengths = rng.integers(40, 91, size=rows)
    words = vocab[rng.integers(0, len(vocab), size=int(lengths.sum()))].tolist()
    texts, at = [], 0
    for n in lengths.tolist():
        texts.append(" ".join(words[at : at + n]))
        at += n
    return pa.table(
        {
            "row_id": [f"{i:012x}" for i in range(rows)],
            "text": texts,
            "label": [CLASSES[i] for i in rng.integers(0, len(CLASSES), size=rows).tolist()],
            "split": ["train"] * rows,
        }
    )


def write_export(table: pa.Table, folder: Path) -> Path:
    """The split as an export lays it out: shards under ``data/``, several row groups each."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    per = -(-table.num_rows // SHARDS)
    for k in range(SHARDS):
        name = f"train-{k:05d}-of-{SHARDS:05d}.parquet"
        pq.write_table(table.slice(k * per, per), folder / "data" / name, row_group_size=ROW_GROUP)
    return folder


def write_lake(table: pa.Table, folder: Path) -> Any:
    from ingestion.lake import Lake

    lake = Lake(folder / "lake")
    lake.overwrite("datasets/bench", table, {"seed": 0, "bench": True})
    return lake


# --- timing


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its children that have ended:
    a loader's workers are joined at the end of each epoch."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _epoch(batches: Iterable[tuple[Any, ...]]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and rows of one pass."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    n = 0
    for batch in batches:
        n += len(batch[-1])
    return time.perf_counter() - start, _cpu_seconds() - cpu, n


def loader_speed(
    rows: int,
    batch_size: int = 256,
    num_workers: int = 0,
    featurise: str = "none",
    source: str = "export",
    repeats: int = 5,
    seed: int = 0,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Rows/s of one epoch through the streaming loader (a split on disk: an export folder
    or a lake dataset version) and through a DataLoader over the same rows in a list, each
    the best of ``repeats`` (run in turns), and their ratio (streaming / in memory); the
    same by CPU seconds (of the process and its workers), ``cpu_ratio``.

    Both sides shuffle, make batches of ``batch_size``, run the same ``featurise`` (none:
    texts and a label tensor; bytes: a padded byte tensor; ngrams: the model's hashed
    n-grams) and use ``num_workers`` workers; each epoch's time includes starting them."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    feat = Featurise(featurise)
    table = synthetic(rows, seed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        kw: dict[str, Any] = {
            "columns": ["text", "label"],
            "batch_size": batch_size,
            "seed": seed,
            "as_arrow": True,
            "transform": FromArrow(feat),
        }
        if source == "export":
            ds = StreamingDataset.from_folder(write_export(table, Path(tmp)), "train", **kw)
        else:
            ds = StreamingDataset.from_lake(write_lake(table, Path(tmp)), "bench", **kw)
        stream = ds.loader(num_workers=num_workers)

        index = {c: i for i, c in enumerate(CLASSES)}
        pairs = [
            (t, index[y])
            for t, y in zip(table["text"].to_pylist(), table["label"].to_pylist(), strict=True)
        ]
        memory: DataLoader[Any] = DataLoader(
            pairs,  # type: ignore[arg-type]
            batch_size=batch_size,
            shuffle=True,
            num_workers=num_workers,
            collate_fn=FromPairs(feat),
            generator=torch.Generator().manual_seed(seed),
        )
        sides: dict[str, Callable[[], Iterable[tuple[Any, ...]]]] = {
            "stream": lambda: stream,
            "memory": lambda: memory,
        }
        best = {name: float("inf") for name in sides}
        cpu = {name: float("inf") for name in sides}
        for _ in range(repeats):
            for name, make in sides.items():
                seconds, cpu_seconds, n = _epoch(make())
                if n != rows:
                    raise RuntimeError(f"{name} read {n} rows of {rows}")
                best[name] = min(best[name], seconds)
                cpu[name] = min(cpu[name], cpu_seconds)
    stream_rate, memory_rate = rows / best["stream"], rows / best["memory"]
    return {
        "rows": rows,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "featurise": featurise,
        "source": source,
        "repeats": repeats,
        "stream_seconds": round(best["stream"], 4),
        "memory_seconds": round(best["memory"], 4),
        "stream_rows_per_s": round(stream_rate),
        "memory_rows_per_s": round(memory_rate),
        "ratio": round(stream_rate / memory_rate, 3),
        # on a machine shared with other work, CPU time is steadier than wall time
        "stream_cpu_seconds": round(cpu["stream"], 4),
        "memory_cpu_seconds": round(cpu["memory"], 4),
        "cpu_ratio": round(cpu["memory"] / cpu["stream"], 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loader", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--featurise", nargs="+", choices=FEATURISERS, default=list(FEATURISERS))
    parser.add_argument("--source", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = []
    for source in args.source:
        for featurise in args.featurise:
            for workers in args.workers:
                row = loader_speed(
                    args.rows, args.batch_size, workers, featurise, source, args.repeats
                )
                results.append(row)
                print(
                    f"{source:6} {featurise:6} workers={workers}: "
                    f"stream {row['stream_rows_per_s']:>10,} rows/s  "
                    f"memory {row['memory_rows_per_s']:>10,} rows/s  ratio {row['ratio']:.2f}  "
                    f"(by CPU time {row['cpu_ratio']:.2f})",
                    flush=True,
                )
    from bench.crawl import machine

    versions = {p: version(p) for p in ("torch", "pyarrow", "deltalake")}
    report = {"machine": machine(versions), "goal": "ratio >= 0.8", "rows": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"results": str(args.out), "min_ratio": min(r["ratio"] for r in results)}))


if __name__ == "__main__":
    main()
