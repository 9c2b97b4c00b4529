"""How to store the band index: a Delta table of (band, key, row) partitioned by band,
against sorted uint64 keys in a memory-mapped file (what ``ingestion/lshindex.py`` keeps).
Both hold the 21 band keys of ``--rows`` rows, written in commits of 50,000 rows as curate
makes them; then the keys of 10,000 rows are looked up, every one present.

    python -m bench.lshstore                 # 1,000,000 rows
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from bench.crawl import machine

RESULTS = Path(__file__).resolve().parent / "results" / "lshstore.json"
BANDS, LOOKUP, COMMIT = 21, 10_000, 50_000


def delta(folder: Path, keys: np.ndarray, asked: np.ndarray) -> dict[str, float]:
    root = str(folder / "delta")
    start = time.perf_counter()
    for c in range(0, len(keys), COMMIT):
        part = keys[c : c + COMMIT]
        n = len(part)
        table = pa.table(
            {
                "band": np.repeat(np.arange(BANDS, dtype=np.int32), n),
                "key": part.T.ravel().astype(np.int64),
                "row": np.tile(np.arange(c, c + n, dtype=np.int64), BANDS),
            }
        )
        write_deltalake(root, table, mode="append", partition_by=["band"])
    written = time.perf_counter() - start
    start = time.perf_counter()
    dataset = DeltaTable(root).to_pyarrow_dataset()
    found = 0
    for b in range(BANDS):
        wanted = pa.array(asked[:, b].astype(np.int64))
        where = (pc.field("band") == b) & pc.field("key").isin(wanted)
        found += dataset.to_table(columns=["row"], filter=where).num_rows
    return {"write_s": written, "lookup_s": time.perf_counter() - start, "found": found}


def sorted_keys(folder: Path, keys: np.ndarray, asked: np.ndarray) -> dict[str, float]:
    salt = np.arange(1, BANDS + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    start = time.perf_counter()
    flat = (keys ^ salt).ravel()
    order = np.argsort(flat, kind="stable")
    np.save(folder / "keys.npy", flat[order])
    np.save(folder / "refs.npy", (order // BANDS).astype(np.uint32))
    written = time.perf_counter() - start
    start = time.perf_counter()
    stored = np.load(folder / "keys.npy", mmap_mode="r")
    wanted = np.sort((asked ^ salt).ravel())
    lo = np.searchsorted(stored, wanted, side="left")
    hi = np.searchsorted(stored, wanted, side="right")
    return {
        "write_s": written,
        "lookup_s": time.perf_counter() - start,
        "found": int(hi.sum() - lo.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, size=(args.rows, BANDS), dtype=np.uint64)
    asked = keys[rng.choice(args.rows, LOOKUP, replace=False)]
    versions = {p: version(p) for p in ("deltalake", "pyarrow", "numpy")}
    report: dict[str, Any] = {
        "machine": machine(versions),
        "rows": args.rows,
        "lookup_rows": LOOKUP,
    }
    with tempfile.TemporaryDirectory(prefix="bench-lshstore-") as tmp:
        report["delta_by_band"] = delta(Path(tmp), keys, asked)
        report["sorted_mmap"] = sorted_keys(Path(tmp), keys, asked)
    for name in ("delta_by_band", "sorted_mmap"):
        r = report[name]
        print(
            f"{name:<14} write {r['write_s']:6.2f} s   lookup of {LOOKUP:,} rows' keys "
            f"{r['lookup_s']:6.3f} s   keys found {r['found']:,}"
        )
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
