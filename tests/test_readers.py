"""DuckDB, Polars and pandas read every lake table, and pinned versions, knowing only paths.

The reading runs in a child process that imports none of the project's packages: what it
proves is that anyone with those libraries and the lake root can read the lake.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import requests

from harvest.demosite import generate
from ingestion.datasets import cut_dataset
from ingestion.lake import Lake
from ingestion.versions import compact, history
from ingestion.writer import BatchWriter
from labeling.sync import LABELS_SCHEMA
from tests.helpers import free_port, run_harvest
from validation.gate import curate
from validation.suite import GateSpec

READER = r"""
import hashlib, json, sys
import duckdb
import pandas as pd
import polars as pl
from deltalake import DeltaTable

root, wanted = sys.argv[1], json.loads(sys.argv[2])
KEYS = ("content_sha256", "row_id", "source")

def digest(values):
    return hashlib.sha256("\n".join(sorted(str(v) for v in values)).encode()).hexdigest()

con = duckdb.connect()
out = []
for table, version in wanted:
    path = f"{root}/{table}"
    dt = DeltaTable(path, version=version)
    if "://" in root:
        # DuckDB's httpfs extension is a download away; delta-rs's own dataset is not
        data = dt.to_pyarrow_dataset()
        rel = con.from_arrow(data)
    else:
        rel = con.read_parquet(dt.file_uris(), union_by_name=True)
    cols = rel.columns
    key = next(k for k in KEYS if k in cols)
    duck = {"rows": con.execute("select count(*) from rel").fetchone()[0],
            "columns": sorted(cols),
            "key": digest(r[0] for r in con.execute(f"select {key} from rel").fetchall())}
    opts = {"storage_options": json.loads(sys.argv[3])} if len(sys.argv) > 3 else {}
    pol = pl.read_delta(path, version=version, **opts)
    polars = {"rows": pol.height, "columns": sorted(pol.columns),
              "key": digest(pol[key].to_list())}
    pdf = DeltaTable(path, version=version).to_pandas()
    pandas = {"rows": len(pdf), "columns": sorted(pdf.columns),
              "key": digest(pdf[key].tolist())}
    out.append({"table": table, "version": version,
                "duckdb": duck, "polars": polars, "pandas": pandas})
project = ("harvest", "ingestion", "validation", "labeling", "training", "spiders")
print(json.dumps({"read": out, "project_modules": [m for m in project if m in sys.modules]}))
# the readers' native thread pools can abort the interpreter's teardown ("terminate called
# without an active exception"); what they read is printed by then
sys.stdout.flush()
import os
os._exit(0)
"""


def read_elsewhere(
    root: str, wanted: list[tuple[str, int | None]], env: dict[str, str] | None = None
) -> list[dict[str, object]]:
    args = [sys.executable, "-c", READER, root, json.dumps(wanted)]
    if env:
        args.append(json.dumps(env))
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["project_modules"] == []
    return list(result["read"])


def expected(lake: Lake, table: str, version: int | None) -> dict[str, object]:
    """What the project itself reads, summarised the way the reader does."""
    data = lake.read(table, version)
    key = next(k for k in ("content_sha256", "row_id", "source") if k in data.column_names)
    values = sorted(str(v) for v in data[key].to_pylist())
    return {
        "rows": data.num_rows,
        "columns": sorted(data.column_names),
        "key": hashlib.sha256("\n".join(values).encode()).hexdigest(),
    }


def assert_read_alike(lake: Lake, read: list[dict[str, object]]) -> None:
    for entry in read:
        want = expected(lake, str(entry["table"]), entry["version"])  # type: ignore[arg-type]
        for tool in ("duckdb", "polars", "pandas"):
            assert entry[tool] == want, (entry["table"], entry["version"], tool)


ARTICLES = [a for a in generate(300, seed=12).articles if not a.planted]


def raw_rows(crawl_id: str, start: int, n: int, bad: int | None = None) -> list[dict[str, object]]:
    return [
        {
            "url": f"http://x/{i}",
            "source": "s",
            "crawl_id": crawl_id,
            "http_status": 200,
            "body": "" if i == bad else " ".join(ARTICLES[i].paragraphs),
            "content_sha256": f"h{i}",
        }
        for i in range(start, start + n)
    ]


def build_lake(root: Path | str) -> Lake:
    """Every kind of table the demo lake has, written by the project's own stages."""
    lake = Lake(root)
    for k, crawl_id in enumerate(("c1", "c2")):
        writer = BatchWriter(lake, "raw/s", batch_size=20, metadata={"crawl_id": crawl_id})
        for row in raw_rows(crawl_id, 20 * k, 20, bad=20 * k + 3):
            writer.add(row)
    curate(lake, "s", GateSpec(text_field="body"), Path(str(root)).parent / "reports")
    curated = lake.read("curated/s", columns=["content_sha256", "url"]).to_pylist()
    labels = [
        {
            "task_id": i,
            "annotation_id": i,
            "row_id": r["content_sha256"],
            "url": r["url"],
            "label": "ab"[i % 2],
            "annotator": 1,
            "updated_at": "2026-01-01",
        }
        for i, r in enumerate(curated)
    ]
    lake.overwrite("labels/s", pa.Table.from_pylist(labels, schema=LABELS_SCHEMA))
    cut_dataset(lake, "s", "s", "labels/s", "body")
    return lake


def test_every_table_and_a_pinned_version_read_without_the_project(tmp_path: Path) -> None:
    lake = build_lake(tmp_path / "lake")
    tables = lake.tables()
    assert set(tables) >= {"raw/s", "curated/s", "quarantine/s", "labels/s", "datasets/s", "runs"}
    assert lake.read("quarantine/s").num_rows == 2
    wanted: list[tuple[str, int | None]] = [(t, None) for t in tables]
    wanted += [("raw/s", 0), ("runs", 0)]  # pinned: the first crawl only
    read = read_elsewhere(str(tmp_path / "lake"), wanted)
    assert_read_alike(lake, read)
    pinned = {(e["table"], e["version"]): e for e in read}
    assert pinned[("raw/s", 0)]["polars"]["rows"] == 20  # type: ignore[index]
    assert pinned[("raw/s", None)]["duckdb"]["rows"] == 40  # type: ignore[index]


def test_a_pinned_version_read_after_compaction(tmp_path: Path) -> None:
    lake = build_lake(tmp_path / "lake")
    compact(lake, "raw/s")
    assert history(lake, "raw/s")[0].operation == "OPTIMIZE"
    read = read_elsewhere(str(tmp_path / "lake"), [("raw/s", 0), ("raw/s", 1), ("raw/s", 2)])
    assert_read_alike(lake, read)
    assert [e["duckdb"]["rows"] for e in read] == [20, 40, 40]  # type: ignore[index]


@pytest.mark.slow
def test_crawled_demo_lake_read_without_the_project(
    lake_env: dict[str, str], demo_site: object
) -> None:
    run_harvest(["crawl", "demo", "--start-url", demo_site.url + "/"], lake_env)  # type: ignore[attr-defined]
    lake = Lake(lake_env["HARVEST_LAKE"])
    tables = [t for t in lake.tables() if not t.startswith("changes/")]
    assert {"raw/demo", "curated/demo", "quarantine/demo", "runs"} <= set(tables)
    read = read_elsewhere(lake.root, [(t, None) for t in tables] + [("raw/demo", 0)])
    assert_read_alike(lake, read)


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A local S3-compatible server (moto), where one is installed; nothing leaves loopback."""
    moto = shutil.which("moto_server")
    if moto is None:
        pytest.skip("no moto_server on PATH: no local S3-compatible endpoint to test against")
    port = free_port()
    proc = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.put(f"{url}/lake", timeout=1).raise_for_status()
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_object_store_lake_with_concurrent_writers(s3_endpoint: dict[str, str]) -> None:
    lake = Lake("s3://lake/harvest")
    lake.append("raw/s", pa.Table.from_pylist(raw_rows("c0", 0, 5)))

    def crawl(crawl_id: str, start: int) -> None:
        for k in range(3):
            rows = raw_rows(crawl_id, start + 5 * k, 5)
            lake.append("raw/s", pa.Table.from_pylist(rows), {"crawl_id": crawl_id})

    threads = [threading.Thread(target=crawl, args=(f"c{w}", 100 * w)) for w in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # every commit landed once, none overwrote another
    assert lake.version("raw/s") == 6 and lake.read("raw/s").num_rows == 35
    assert sum(c.crawl_id == "c1" for c in history(lake, "raw/s")) == 3
    assert lake.tables() == ["raw/s"]
    compact(lake, "raw/s")
    assert lake.new_files("raw/s", 6) == []
    assert len(lake.new_files("raw/s", 0)) == 6
    read = read_elsewhere(lake.root, [("raw/s", None), ("raw/s", 0)], s3_endpoint)
    assert_read_alike(lake, read)
