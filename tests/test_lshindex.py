"""The band index beside curated/<source>: the same answers as a scan of the table, kept
up to date by the commits in the table's log, and repaired after a kill at any point of
its write."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from harvest.demosite import generate
from ingestion import lshindex
from ingestion.dedup import Deduper, DedupResult
from ingestion.lake import Lake
from ingestion.lshindex import BandIndex
from ingestion.minhash import NearDuplicates
from tests.helpers import ROOT
from tests.test_dedup import raw_table, rows


def same(a: DedupResult, b: DedupResult) -> None:
    pd.testing.assert_frame_equal(a.kept.reset_index(drop=True), b.kept.reset_index(drop=True))
    pd.testing.assert_frame_equal(
        a.dropped.reset_index(drop=True), b.dropped.reset_index(drop=True)
    )


def index_rows(lake: Lake, source: str = "demo") -> list[tuple[str, str, str]]:
    """(url, content hash, group) of every row the index holds, checked against its keys."""
    index = BandIndex(lake, source, NearDuplicates())
    manifest = index.manifest()
    assert manifest is not None
    out = []
    for seg in manifest["segments"]:
        keys = np.load(index.dir / f"{seg['name']}.keys.npy")
        refs = np.load(index.dir / f"{seg['name']}.refs.npy")
        held = index._rows_of(seg["name"])
        assert held.num_rows == seg["rows"] and (np.diff(keys) >= 0).all()
        # a key for each content hash, and one a band for each row with a signature
        signed = held["minhash"].is_valid().to_numpy(zero_copy_only=False).sum()
        assert len(keys) == len(refs) == held.num_rows + 21 * signed
        out += zip(
            held["url"].to_pylist(),
            held["content_sha256"].to_pylist(),
            held["group"].to_pylist(),
            strict=True,
        )
    return sorted(out)


def table_rows(lake: Lake, source: str = "demo") -> list[tuple[str, str, str]]:
    """The same of the table; a row without a group (appended by hand) is its own."""
    t = lake.read(f"curated/{source}", columns=["url", "content_sha256", "dup_group"])
    hashes = t["content_sha256"].to_pylist()
    groups = [g or h for g, h in zip(t["dup_group"].to_pylist(), hashes, strict=True)]
    return sorted(zip(t["url"].to_pylist(), hashes, groups, strict=True))


def test_the_index_answers_as_the_scan_does_at_every_version(tmp_path: Path) -> None:
    """Originals curated in a drawn number of commits, then batches of their copies (and
    originals again under new URLs): the index and the scan agree, at the latest version
    and at each pinned one, and the index holds exactly the table's rows."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    site = generate(300, seed=rng.randrange(100))
    lake = Lake(tmp_path)
    originals = rows(site, {""})
    cuts = sorted(rng.sample(range(1, len(originals)), rng.randint(1, 6)))
    for part in np.split(np.arange(len(originals)), cuts):
        kept = Deduper(lake, "demo", "body")(originals.iloc[part]).kept
        lake.append("curated/demo", pa.Table.from_pandas(kept, preserve_index=False))
    assert index_rows(lake) != table_rows(lake), seed  # the last commit is not indexed yet

    again = originals.sample(5, random_state=rng.randrange(100))
    batch = pd.concat(
        [rows(site, {"duplicate", "near_duplicate"}), again.assign(url=again["url"] + "/moved")],
        ignore_index=True,
    )
    latest = lake.version("curated/demo")
    assert latest is not None
    for version in (None, *range(-1, latest + 1)):
        indexed = Deduper(lake, "demo", "body", version=version)(batch)
        scanned = Deduper(lake, "demo", "body", version=version, index=False)(batch)
        same(indexed, scanned)
    assert index_rows(lake) == table_rows(lake), seed
    assert indexed.exact == len(site.planted_duplicates) + 5 and indexed.near > 0


def test_other_writers_commits_are_replayed_and_deletes_rebuild(tmp_path: Path) -> None:
    site = generate(200, seed=4)
    lake = Lake(tmp_path)
    originals = rows(site, {""})
    first = Deduper(lake, "demo", "body")(originals)
    lake.append("curated/demo", pa.Table.from_pandas(first.kept, preserve_index=False))
    Deduper(lake, "demo", "body").sync_index()
    built = BandIndex(lake, "demo", NearDuplicates()).manifest()
    assert built is not None and built["base"] == 0

    # rows another writer (a quarantine review) appended, and rows deleted by hand
    copies = rows(site, {"near_duplicate"})
    lake.append("curated/demo", pa.Table.from_pandas(copies, preserve_index=False))
    result = Deduper(lake, "demo", "body")(copies)
    assert result.exact == len(copies) and result.kept.empty
    replayed = BandIndex(lake, "demo", NearDuplicates()).manifest()
    assert replayed is not None and replayed["base"] == 0  # replayed, not rebuilt

    gone = first.kept["url"].iloc[:3].tolist()
    DeltaTable(lake.uri("curated/demo")).delete(f"url IN ({', '.join(map(repr, gone))})")
    result = Deduper(lake, "demo", "body")(originals[originals["url"].isin(gone)])
    assert result.exact == 0 and len(result.kept) == 3
    rebuilt = BandIndex(lake, "demo", NearDuplicates()).manifest()
    assert rebuilt is not None and rebuilt["base"] == lake.version("curated/demo")
    assert index_rows(lake) == table_rows(lake)
    # a version from before the rebuild is answered by the table itself
    before = Deduper(lake, "demo", "body", version=0)(originals.iloc[:3])
    assert before.exact == 3


def test_segments_merge_and_stay_few(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small commits: segments merge as they come, up to the size a merge may reach."""
    monkeypatch.setattr(lshindex, "SEGMENT_ROWS", 64)
    site = generate(260, seed=6)
    lake = Lake(tmp_path)
    originals = rows(site, {""})
    sizes = []
    for start in range(0, len(originals), 7):
        deduper = Deduper(lake, "demo", "body")
        kept = deduper(originals.iloc[start : start + 7]).kept
        lake.append("curated/demo", pa.Table.from_pandas(kept, preserve_index=False))
        deduper.sync_index()
        manifest = BandIndex(lake, "demo", NearDuplicates()).manifest()
        assert manifest is not None
        sizes.append([s["rows"] for s in manifest["segments"]])
    assert max(max(s) for s in sizes) <= 64
    assert max(len(s) for s in sizes) <= len(originals) // 64 + 4
    assert index_rows(lake) == table_rows(lake)
    files = {f.name.split(".")[0] for f in (tmp_path / "lsh" / "demo").iterdir()}
    assert files == {s["name"] for s in manifest["segments"]} | {"manifest"}


CURATE = """
import sys
from harvest.recipe import load_recipe
from harvest.stages import gate_spec
from ingestion.lake import Lake
from validation.gate import curate
spec = gate_spec(load_recipe("demo", sys.argv[2] + "/sources"))
curate(Lake(sys.argv[1]), "demo", spec, sys.argv[1] + "/../reports")
"""


def curate_in_child(lake: Path, pause: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if pause:
        env["HARVEST_PAUSE_AT"] = pause
    return subprocess.Popen(
        [sys.executable, "-c", CURATE, str(lake), str(ROOT)],
        env=env,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def killed_at(lake: Path, point: str) -> None:
    proc = curate_in_child(lake, point)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    line = b""
    while time.monotonic() < deadline and b"paused at" not in line:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "exited before the pause point"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert b"paused at " + point.encode() in line


def state(root: Path) -> dict[str, Any]:
    lake = Lake(root)
    duplicates = lake.read("duplicates/demo", columns=["url", "reason", "duplicate_of"])
    return {
        "curated": table_rows(lake),
        "duplicates": sorted(map(json.dumps, duplicates.to_pylist())),
        "index": index_rows(lake),
    }


@pytest.mark.slow
def test_a_curate_killed_around_the_index_write_is_finished_by_the_next(tmp_path: Path) -> None:
    """SIGKILL after the curated commit but before the index has it, and after a segment is
    written but before the manifest names it: the next curate replays the commit, sweeps
    the segment, and ends where a run never killed ends."""
    site = generate(240, seed=8)
    raw = rows(site).drop(columns=["content_sha256"])
    copies = set(site.truth("http://news.test")["near_duplicates"])  # type: ignore[arg-type]
    # the second batch: near copies of the first's rows, and rows of its own
    late = raw["url"].isin(copies) | (raw.index >= len(raw) - 30)

    def lake_with_first_batch(where: Path) -> Path:
        lake = Lake(where / "lake")
        lake.append("raw/demo", raw_table(raw[~late]))
        assert curate_in_child(where / "lake").wait(timeout=300) == 0
        lake.append("raw/demo", raw_table(raw[late]))
        return where / "lake"

    first = lake_with_first_batch(tmp_path / "first")
    reference = tmp_path / "whole" / "lake"
    shutil.copytree(first, reference)
    assert curate_in_child(reference).wait(timeout=300) == 0
    want = state(reference)
    assert want["curated"] and want["duplicates"]
    for point in ("curate:curated", "lsh:segment"):
        lake = tmp_path / point.replace(":", "-") / "lake"
        shutil.copytree(first, lake)
        killed_at(lake, point)
        assert curate_in_child(lake).wait(timeout=300) == 0
        assert state(lake) == want, point


def test_a_damaged_segment_is_read_again_from_the_table(tmp_path: Path) -> None:
    site = generate(120, seed=12)
    lake = Lake(tmp_path)
    originals = rows(site, {""})
    deduper = Deduper(lake, "demo", "body")
    kept = deduper(originals).kept
    lake.append("curated/demo", pa.Table.from_pandas(kept, preserve_index=False))
    deduper.sync_index()
    index = BandIndex(lake, "demo", NearDuplicates())
    manifest = index.manifest()
    assert manifest is not None
    damaged = index.dir / f"{manifest['segments'][0]['name']}.keys.npy"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a disk that lost the file's tail

    copies = rows(site, {"duplicate", "near_duplicate"})
    same(Deduper(lake, "demo", "body")(copies), Deduper(lake, "demo", "body", index=False)(copies))
    assert index_rows(lake) == table_rows(lake)
