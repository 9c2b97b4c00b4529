"""Lake benchmark: ingestion into ``raw``, the gate, and near-duplicate detection, each
against a plain peer in the same run. Every contender runs in a child process of its own,
so the peak RSS sampled from /proc is its own.

    python -m bench.lake                 # 1,000,000 rows, 100,000 documents
    python -m bench.lake --quick         # a check: 50,000 rows, 10,000 documents
    python -m bench.lake --only be --growth 10000,100000,1000000,3000000

``--only`` runs some rows (and the growth series, if ``--growth`` names tables); the rows
not run keep their figures from the results file, each marked with the run it came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.crawl import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "lake.json"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024
LAKE_PACKAGES = ("deltalake", "pyarrow", "pandas", "great-expectations", "datasketch")
SAMPLE_SECONDS = 0.1
SOURCE = "bench"
CATEGORIES = ("world", "sports", "business", "science", "culture")
DATE_FORMAT = "%Y-%m-%d"
BODY_MIN, BODY_MAX = 200, 5_000
PRICE_MAX = 10_000.0
# one row in this many carries each planted defect, and one in this many is a copy
DEFECT_EVERY = 97
COPY_EVERY = 53
_rng = np.random.default_rng(0)
VOCAB = np.array(
    [
        "".join(chr(97 + c) for c in _rng.integers(0, 26, size=_rng.integers(2, 10)))
        for _ in range(5000)
    ]
)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


# --- synthetic data, the same in every process


def texts(rng: np.random.Generator, n: int, low: int = 40, high: int = 90) -> list[str]:
    """Prose-shaped text: ``low`` to ``high`` words (some 250 to 600 characters)."""
    counts = rng.integers(low, high, size=n)
    words = VOCAB[rng.integers(0, len(VOCAB), size=int(counts.sum()))]
    return [" ".join(w) for w in np.split(words, np.cumsum(counts)[:-1])]


def edited(rng: np.random.Generator, text: str, share: float) -> str:
    """``text`` with about ``share`` of its words replaced, dropped or doubled."""
    words = text.split()
    out: list[str] = []
    for w in words:
        r = rng.random()
        if r >= share:
            out.append(w)
        elif r < share / 3:
            out.append(str(VOCAB[rng.integers(0, len(VOCAB))]))
        elif r < 2 * share / 3:
            out += [w, w]
    return " ".join(out)


def raw_batch(index: int, n: int) -> pa.Table:
    """Batch ``index`` of ``raw/bench``: provenance, a title, a body, a category, a
    publication date and a price, with planted defects and copies."""
    from ingestion.schema import PROVENANCE

    rng = np.random.default_rng(1_000 + index)
    bodies = texts(rng, n)
    titles: list[str | None] = [" ".join(b.split()[:6]).title() for b in bodies]
    dates: list[str | None] = [
        (EPOCH - timedelta(days=int(d))).strftime(DATE_FORMAT)
        for d in rng.integers(0, 3000, size=n)
    ]
    prices = np.round(rng.gamma(2.0, 40.0, size=n), 2)
    categories = [CATEGORIES[c] for c in rng.integers(0, len(CATEGORIES), size=n)]
    first = index * n
    for j in range(n):
        k = first + j
        if k % COPY_EVERY == 1 and j:  # a copy of the row before: exact or edited
            bodies[j] = bodies[j - 1] if k % 2 else edited(rng, bodies[j - 1], 0.05)
        if k % DEFECT_EVERY == 3:
            titles[j] = None
        elif k % DEFECT_EVERY == 5:
            bodies[j] = bodies[j][:40]
        elif k % DEFECT_EVERY == 7:
            dates[j] = "31/12/2024"
        elif k % DEFECT_EVERY == 11:
            prices[j] = -1.0
    fetched = pa.array(
        [EPOCH + timedelta(seconds=first + j) for j in range(n)],
        PROVENANCE.field("fetched_at").type,
    )
    columns: dict[str, Any] = {
        "source": [SOURCE] * n,
        "url": [f"https://news.example/{k // 1000}/article-{k}" for k in range(first, first + n)],
        "crawl_id": [f"bench-{index // 100}"] * n,
        "fetched_at": fetched,
        "http_status": pa.array([200] * n, pa.int32()),
        "content_sha256": [
            hashlib.sha256(f"{t}\x00{b}".encode()).hexdigest()
            for t, b in zip(titles, bodies, strict=True)
        ],
        "etag": [f'"{k:x}"' for k in range(first, first + n)],
        "last_modified": [None] * n,
        "title": titles,
        "body": bodies,
        "category": categories,
        "published": dates,
        "price": pa.array(prices, pa.float64()),
    }
    schema = PROVENANCE
    for name, kind in FIELDS.items():
        schema = schema.append(pa.field(name, kind))
    return pa.table(columns, schema=schema)


FIELDS = {
    "title": pa.string(),
    "body": pa.string(),
    "category": pa.string(),
    "published": pa.string(),
    "price": pa.float64(),
}


def batches(rows: int, size: int) -> Iterator[pa.Table]:
    for index in range(-(-rows // size)):
        yield raw_batch(index, min(size, rows - index * size))


def documents(n: int) -> tuple[list[str], list[int]]:
    """``n`` texts, one in ten an edited copy (5 to 15% of words changed) of an earlier
    one; and each text's family: the index of the text it was copied from, or its own."""
    rng = np.random.default_rng(7)
    docs = texts(rng, n)
    family = list(range(n))
    for i in range(1, n):
        if rng.random() < 0.1:
            j = int(rng.integers(0, i))
            docs[i] = edited(rng, docs[j], float(rng.uniform(0.05, 0.15)))
            family[i] = family[j]
    return docs, family


def gate_spec() -> Any:
    from ingestion.transforms import parse_steps
    from validation.suite import GateSpec, Rule

    return GateSpec(
        text_field="body",
        required=["title", "category"],
        dates={"published": DATE_FORMAT},
        rules=[
            Rule("length_between", "body", BODY_MIN, BODY_MAX),
            Rule("length_between", "title", 1, 300),
            Rule("between", "price", 0, PRICE_MAX),
        ],
        steps=parse_steps(None, "body"),  # what a recipe without ``steps:`` gets
    )


# --- the contenders, each run in a child process


def timed(fn: Callable[..., Any], spent: dict[str, float], key: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - start

    return wrapper


def ingest_bulk(args: argparse.Namespace) -> dict[str, Any]:
    """harvest's bulk path: the Arrow batches into a BatchWriter that commits every
    ``--commit-rows`` rows."""
    from ingestion.lake import Lake
    from ingestion.writer import BatchWriter

    writer = BatchWriter(
        Lake(args.dir), f"raw/{SOURCE}", args.commit_rows, FIELDS, {"crawl_id": "bench"}
    )
    spent = 0.0
    for batch in batches(args.rows, args.batch_rows):
        start = time.perf_counter()
        writer.add_table(batch)
        spent += time.perf_counter() - start
    start = time.perf_counter()
    writer.flush()
    spent += time.perf_counter() - start
    return {"seconds": spent, "rows": writer.rows_committed, "commits": writer.batches_committed}


def ingest_rows(args: argparse.Namespace) -> dict[str, Any]:
    """harvest's crawler path: rows as dicts into a BatchWriter, one commit per batch."""
    from ingestion.lake import Lake
    from ingestion.writer import BatchWriter

    writer = BatchWriter(
        Lake(args.dir), f"raw/{SOURCE}", args.batch_rows, FIELDS, {"crawl_id": "bench"}
    )
    spent = 0.0
    for batch in batches(args.rows, args.batch_rows):
        rows = batch.to_pylist()
        start = time.perf_counter()
        for row in rows:
            writer.add(row)
        spent += time.perf_counter() - start
    start = time.perf_counter()
    writer.flush()
    spent += time.perf_counter() - start
    return {"seconds": spent, "rows": writer.rows_committed, "commits": writer.batches_committed}


def ingest_parquet(args: argparse.Namespace) -> dict[str, Any]:
    """The peer: the same Arrow batches into one Parquet file, a row group each."""
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    spent, rows = 0.0, 0
    for batch in batches(args.rows, args.batch_rows):
        start = time.perf_counter()
        if writer is None:
            writer = pq.ParquetWriter(Path(args.dir) / "raw.parquet", batch.schema)
        writer.write_table(batch)
        spent += time.perf_counter() - start
        rows += batch.num_rows
    start = time.perf_counter()
    if writer is not None:
        writer.close()
    return {"seconds": spent + time.perf_counter() - start, "rows": rows}


def gate_harvest(args: argparse.Namespace) -> dict[str, Any]:
    """``curate`` over every raw row, with where its time went."""
    import validation.batch
    from ingestion.dedup import Deduper
    from ingestion.lake import Lake
    from validation import gate

    spent: dict[str, float] = {}
    gate.new_raw_rows = timed(gate.new_raw_rows, spent, "read")  # type: ignore[assignment]
    gate.apply_steps = timed(gate.apply_steps, spent, "transforms")  # type: ignore[assignment]
    validation.batch.check_batch = timed(validation.batch.check_batch, spent, "batch_gate")  # type: ignore[assignment]
    gate._for_validation = timed(gate._for_validation, spent, "expectations")  # type: ignore[assignment]
    gate.validate = timed(gate.validate, spent, "expectations")  # type: ignore[assignment]
    Deduper.__call__ = timed(Deduper.__call__, spent, "dedup")  # type: ignore[method-assign]
    lake = Lake(args.dir)
    lake.append = timed(lake.append, spent, "writes")  # type: ignore[method-assign]
    start = time.perf_counter()
    result = gate.curate(lake, SOURCE, gate_spec(), Path(args.dir) / "reports")
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": result.rows_in,
        "curated": result.curated,
        "quarantined": result.quarantined,
        "duplicates": result.duplicates_dropped,
        "near_duplicates": result.near_duplicates_dropped,
        "failures": result.failures,
        "batch_status": result.batch_status,
        "chunk_rows": gate.CHUNK_ROWS,
        "breakdown_s": {k: round(v, 2) for k, v in spent.items()},
    }


def gate_pandas(args: argparse.Namespace) -> dict[str, Any]:
    """The peer: the same row-level checks in plain pandas over the whole table."""
    import pandas as pd
    import pyarrow.parquet as pq

    from ingestion.lake import Lake

    start = time.perf_counter()
    files = Lake(args.dir).new_files(f"raw/{SOURCE}", None)
    df = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
    read = time.perf_counter() - start
    start = time.perf_counter()
    failed = {
        "not_null(url)": df["url"].isna(),
        "unique(url)": df["url"].duplicated(keep=False),
        "not_null(body)": df["body"].isna(),
        "length_between(body)[1,100000]": ~df["body"].str.len().between(1, 100_000),
        "not_null(title)": df["title"].isna(),
        "not_null(category)": df["category"].isna(),
        "date_parses(published)": pd.to_datetime(
            df["published"], format=DATE_FORMAT, errors="coerce"
        ).isna(),
        f"length_between(body)[{BODY_MIN},{BODY_MAX}]": ~df["body"]
        .str.len()
        .between(BODY_MIN, BODY_MAX),
        "length_between(title)[1,300]": ~df["title"].str.len().between(1, 300),
        f"between(price)[0,{PRICE_MAX:g}]": ~df["price"].between(0, PRICE_MAX),
    }
    bad = np.zeros(len(df), dtype=bool)
    for mask in failed.values():
        bad |= mask.to_numpy()
    good, quarantined = df[~bad], df[bad]
    checks = time.perf_counter() - start
    return {
        "seconds": read + checks,
        "rows": len(df),
        "curated": len(good),
        "quarantined": len(quarantined),
        "failures": {k: int(v.sum()) for k, v in failed.items() if v.any()},
        "breakdown_s": {"read": round(read, 2), "expectations": round(checks, 2)},
    }


def dedup_harvest(args: argparse.Namespace) -> dict[str, Any]:
    """``ingestion.dedup.Deduper`` over the documents as one batch (an empty table)."""
    import pandas as pd

    from ingestion.dedup import NEAR, Deduper
    from ingestion.lake import Lake

    docs, family = documents(args.docs)
    df = pd.DataFrame(
        {
            "url": [f"https://docs.example/{i}" for i in range(len(docs))],
            "content_sha256": [hashlib.sha256(d.encode()).hexdigest() for d in docs],
            "text": docs,
        }
    )
    start = time.perf_counter()
    result = Deduper(Lake(args.dir), SOURCE, "text")(df)
    seconds = time.perf_counter() - start
    dropped = result.dropped
    index = {u: i for i, u in enumerate(df["url"])}
    pairs = [
        (index[u], index[d])
        for u, d, r in zip(dropped["url"], dropped["duplicate_of"], dropped["reason"], strict=True)
        if r == NEAR
    ]
    return {"seconds": seconds, "docs": len(docs), **quality(docs, family, pairs)}


def dedup_datasketch(args: argparse.Namespace) -> dict[str, Any]:
    """The peer: datasketch as its README shows, a MinHash built one by one per document
    (same shingles, sha1 hashing) and MinHashLSH; a document with a candidate is dropped."""
    from datasketch import MinHash, MinHashLSH

    from ingestion.minhash import shingles

    docs, family = documents(args.docs)
    start = time.perf_counter()
    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    pairs = []
    for i, text in enumerate(docs):
        m = MinHash(num_perm=128)
        for s in shingles(text, 5):
            m.update(s)
        found = lsh.query(m)
        if found:
            pairs.append((i, int(min(found))))
        else:
            lsh.insert(i, m)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "docs": len(docs), **quality(docs, family, pairs)}


def quality(docs: list[str], family: list[int], pairs: list[tuple[int, int]]) -> dict[str, Any]:
    """Precision and recall of (dropped, kept original) pairs against the planted families.
    Recall is also given over the copies whose true Jaccard with their family's first text
    reaches the 0.7 threshold (weaker edits than that are not meant to be caught)."""
    from ingestion.minhash import shingles

    copies = [i for i in range(len(docs)) if family[i] != i]
    right = {i for i, j in pairs if family[i] == family[j]}
    close = []
    for i in copies:
        a, b = set(shingles(docs[i], 5)), set(shingles(docs[family[i]], 5))
        if len(a & b) / len(a | b) >= 0.7:
            close.append(i)
    return {
        "planted": len(copies),
        "dropped": len(pairs),
        "precision": round(len(right) / len(pairs), 4) if pairs else None,
        "recall": round(len(right) / len(copies), 4) if copies else None,
        "recall_at_0.7": round(len(right & set(close)) / len(close), 4) if close else None,
    }


GROWTH_BATCH = 10_000
GROWTH_RUNS = 3  # batches timed one after the other: the median is the figure
PLANT_EVERY = 50  # one row of the timed batch in this many copies a row the table holds
FILLER_COMMIT = 100_000


def curate_growth(args: argparse.Namespace) -> dict[str, Any]:
    """One 10,000-row batch curated against a curated table of ``--table-rows`` rows.

    The table: one real batch, curated (its rows' texts are what the timed batch copies),
    then filler rows up to the size, each with a signature of random values (what a text's
    MinHash looks like to the index: its own keys, no candidates), committed 100,000 at a
    time; the band index is brought up to it before the clock starts, as each curate
    leaves it. The timed batches are the generator's next ones with one row in 50 replaced
    by a copy (exact, or 5% of words edited) of a real table row; the figure is the median
    of three.
    """
    from ingestion.dedup import Deduper
    from ingestion.lake import Lake
    from validation import gate

    lake = Lake(args.dir)
    spec = gate_spec()
    reports = Path(args.dir) / "reports"
    lake.append(f"raw/{SOURCE}", raw_batch(0, GROWTH_BATCH))
    gate.curate(lake, SOURCE, spec, reports)
    real = lake.read(f"curated/{SOURCE}", columns=["url", "body"])
    rng = np.random.default_rng(3)
    for start in range(real.num_rows, args.table_rows, FILLER_COMMIT):
        n = min(FILLER_COMMIT, args.table_rows - start)
        raw = rng.bytes(32 * n)
        hashes = [raw[i * 32 : (i + 1) * 32].hex() for i in range(n)]
        sigs = rng.integers(0, 2**32, size=(n, 128), dtype=np.uint32).astype("<u4")
        filler = pa.table(
            {
                "url": [f"https://filler.example/{start + i}" for i in range(n)],
                "content_sha256": hashes,
                "dup_group": hashes,
                "minhash": pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(512), n, [None, pa.py_buffer(sigs.tobytes())]
                ).cast(pa.binary()),
            }
        )
        lake.append(f"curated/{SOURCE}", filler)
    Deduper(lake, SOURCE, "body").sync_index()
    table_rows = lake.dataset(f"curated/{SOURCE}").count_rows()
    os.sync()  # the gigabytes just written go to disk now, not while the clock runs

    rng = np.random.default_rng(5)  # the same timed batches whatever the table's size
    spent: dict[str, float] = {}
    Deduper.__call__ = timed(Deduper.__call__, spent, "dedup")  # type: ignore[method-assign]
    Deduper.sync_index = timed(Deduper.sync_index, spent, "index_write")  # type: ignore[method-assign]
    gate.apply_steps = timed(gate.apply_steps, spent, "transforms")  # type: ignore[assignment]
    times: list[float] = []
    planted: dict[str, str] = {}
    mine: set[str] = set()
    # the curates' own peak: building the table above holds far more than they do
    with PeakMemory() as peak:
        for index in range(1, GROWTH_RUNS + 1):
            batch = planted_batch(rng, index, real, planted)
            mine.update(batch["url"].to_pylist())
            lake.append(f"raw/{SOURCE}", batch)
            start = time.perf_counter()
            gate.curate(lake, SOURCE, spec, reports)
            times.append(time.perf_counter() - start)

    held = lake.read(f"duplicates/{SOURCE}", columns=["url", "duplicate_of"]).to_pylist()
    against_table = [r for r in held if r["url"] in mine and r["duplicate_of"] not in mine]
    right = sum(1 for r in against_table if planted.get(r["url"]) == r["duplicate_of"])
    quarantined = set(result_failed(lake))
    reachable = [u for u in planted if u not in quarantined]
    return {
        "seconds": float(np.median(times)),
        "runs_s": [round(t, 2) for t in times],
        "table_rows": table_rows,
        "planted": len(reachable),
        "precision": round(right / len(against_table), 4) if against_table else None,
        "recall": round(right / len(reachable), 4) if reachable else None,
        "breakdown_s": {k: round(v / GROWTH_RUNS, 2) for k, v in spent.items()},
        "curate_peak_rss_mib": round(peak.rss, 1),
        "curate_peak_anon_mib": round(peak.anon, 1),
    }


def planted_batch(
    rng: np.random.Generator, index: int, real: pa.Table, planted: dict[str, str]
) -> pa.Table:
    """The generator's batch ``index`` with one row in 50 a copy of a ``real`` row: the
    copy's URL and the original's go into ``planted``."""
    batch = raw_batch(index, GROWTH_BATCH)
    bodies = batch["body"].to_pylist()
    urls = batch["url"].to_pylist()
    originals = real["body"].to_pylist()
    for j in range(0, GROWTH_BATCH, PLANT_EVERY):
        if (index * GROWTH_BATCH + j + 1) % COPY_EVERY == 1:
            continue  # the generator copies the next row from this one: a copy of a copy
        k = int(rng.integers(0, real.num_rows))
        bodies[j] = originals[k] if j % 2 else edited(rng, originals[k], 0.05)
        planted[urls[j]] = real["url"][k].as_py()
    titles = batch["title"].to_pylist()
    hashes = [
        hashlib.sha256(f"{t}\x00{b}".encode()).hexdigest()
        for t, b in zip(titles, bodies, strict=True)
    ]
    batch = batch.set_column(batch.schema.get_field_index("body"), "body", pa.array(bodies))
    at = batch.schema.get_field_index("content_sha256")
    return batch.set_column(at, "content_sha256", pa.array(hashes))


def result_failed(lake: Any) -> list[str]:
    """URLs the gate quarantined: a planted copy there never reaches dedup."""
    if not lake.exists(f"quarantine/{SOURCE}"):
        return []
    return list(lake.read(f"quarantine/{SOURCE}", columns=["url"])["url"].to_pylist())


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "ingest_bulk": ingest_bulk,
    "ingest_rows": ingest_rows,
    "ingest_parquet": ingest_parquet,
    "gate_harvest": gate_harvest,
    "gate_pandas": gate_pandas,
    "dedup_harvest": dedup_harvest,
    "dedup_datasketch": dedup_datasketch,
    "curate_growth": curate_growth,
}


# --- the parent: runs each child and samples its memory


def rss_mib(pid: int | str) -> tuple[float, float]:
    """Resident memory, and the anonymous part of it: the rest is file pages (the
    libraries, the band index's memory-mapped segments), which the kernel can drop and
    read again."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            fields = f.read().split()
        resident, shared = int(fields[1]), int(fields[2])
        return resident * PAGE_SIZE / MIB, (resident - shared) * PAGE_SIZE / MIB
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


class PeakMemory:
    """Samples a process's resident and anonymous memory until stopped; the peaks."""

    def __init__(self, pid: int | str = "self"):
        self.pid, self.rss, self.anon = pid, 0.0, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            rss, anon = rss_mib(self.pid)
            self.rss, self.anon = max(self.rss, rss), max(self.anon, anon)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def run_child(
    kind: str, args: argparse.Namespace, folder: Path, table_rows: int = 0
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.lake", "--child", kind, "--dir", str(folder)]
    argv += ["--rows", str(args.rows), "--docs", str(args.docs)]
    argv += ["--table-rows", str(table_rows)]
    argv += ["--batch-rows", str(args.batch_rows), "--commit-rows", str(args.commit_rows)]
    print(f"{kind} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    with PeakMemory(proc.pid) as peak:
        stdout, _ = proc.communicate()
    result: dict[str, Any] = {"kind": kind, "wall_seconds": round(time.monotonic() - start, 2)}
    if proc.returncode:
        return {**result, "status": f"failed (exit {proc.returncode})"}
    result.update(json.loads(stdout.strip().splitlines()[-1]))
    result.update(status="ok", peak_rss_mib=round(peak.rss, 1), peak_anon_mib=round(peak.anon, 1))
    return result


def child_main(args: argparse.Namespace) -> None:
    result = CHILDREN[args.child](args)
    # the kernel's high-water mark, next to the sampled peak the parent takes
    result["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def rate(r: dict[str, Any], unit: str) -> float | None:
    return round(r[unit] / r["seconds"]) if r.get("status") == "ok" and r["seconds"] else None


def table(report: dict[str, Any]) -> str:
    head = f"{'row':<52} {'items':>9} {'s':>8} {'items/s':>9} {'peak RSS MiB':>12}  notes"
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        name = f"({r['row']}) {r['name']}"
        if r.get("status") != "ok":
            lines.append(f"{name:<52} {r.get('status')}")
            continue
        n = r.get("rows", r.get("docs"))
        cells = f"{n:>9,} {r['seconds']:>8.2f} {r['per_s'] or '-':>9,} {r['peak_rss_mib']:>12}"
        lines.append(f"{name:<52} {cells}  {r.get('note', '')}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows ingested and gated")
    parser.add_argument("--docs", type=int, default=100_000, help="documents for near-dup")
    parser.add_argument(
        "--batch-rows", type=int, default=1_000, help="rows per Arrow batch and per crawl commit"
    )
    parser.add_argument(
        "--commit-rows", type=int, default=50_000, help="rows per commit of the bulk path"
    )
    parser.add_argument("--quick", action="store_true", help="50,000 rows, 10,000 documents")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", default="abcdegh", help="the rows to run, e.g. be")
    parser.add_argument(
        "--growth",
        default="10000,100000,1000000",
        help="curated table sizes of the curate_growth series ('' for none)",
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--table-rows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    if args.quick:
        args.rows, args.docs = 50_000, 10_000

    report: dict[str, Any] = {
        "machine": machine({p: version(p) for p in LAKE_PACKAGES}),
        "rows": [],
        "batch_rows": args.batch_rows,
    }
    report.update(raw_rows=args.rows, docs=args.docs, commit_rows=args.commit_rows)
    rows: list[dict[str, Any]] = report["rows"]
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        lake = Path(tmp) / "lake"
        for key, kind, folder, name in (
            ("a", "ingest_parquet", Path(tmp) / "parquet", "plain pyarrow ParquetWriter"),
            ("b", "ingest_bulk", lake, "harvest BatchWriter, Arrow batches -> raw"),
            ("c", "ingest_rows", Path(tmp) / "rows", "harvest BatchWriter, rows as a crawl"),
        ):
            folder.mkdir(exist_ok=True)
            if key in args.only or (key == "b" and set("de") & set(args.only)):
                r = run_child(kind, args, folder)
                rows.append({"row": key, "name": name, **r, "per_s": rate(r, "rows")})
        gates = [
            ("d", "gate_pandas", "plain pandas checks"),
            ("e", "gate_harvest", "harvest curate (all of it)"),
        ]
        for key, kind, name in gates:
            if key in args.only:
                r = run_child(kind, args, lake)
                rows.append({"row": key, "name": name, **r, "per_s": rate(r, "rows")})
        for key, kind, name in (
            ("g", "dedup_datasketch", "datasketch one by one + MinHashLSH"),
            ("h", "dedup_harvest", "harvest Deduper (MinHash.bulk + LSH)"),
        ):
            if key in args.only:
                folder = Path(tmp) / kind
                folder.mkdir()
                r = run_child(kind, args, folder)
                rows.append({"row": key, "name": name, **r, "per_s": rate(r, "docs")})
        shutil.rmtree(Path(tmp) / "rows", ignore_errors=True)  # disk for the growth series
        shutil.rmtree(lake, ignore_errors=True)
        report["curate_growth"] = growth(args, Path(tmp))
    carry(report, args.out)
    annotate(rows)
    print(f"\nlake benchmark, {report['machine']['date']}, {os.cpu_count()} CPUs")
    print(
        f"{args.rows:,} raw rows in Arrow batches of {args.batch_rows:,}, bulk commits of "
        f"{args.commit_rows:,}; {args.docs:,} documents; "
        f"load average {report['machine']['load_average'][0]:.2f}\n"
    )
    print(table(report))
    for g in report["curate_growth"]:
        print(
            f"curate one {GROWTH_BATCH:,}-row batch against {g['table_rows']:>9,} curated rows: "
            f"{g['seconds']:.2f} s, peak RSS {g.get('peak_rss_mib')} MiB, {g.get('note', '')}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten to {args.out}")


def growth(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """The curate_growth series: a child a table size, each in a fresh lake."""
    out = []
    sizes = [int(n) for n in args.growth.split(",") if n.strip()]
    for n in sizes:
        folder = tmp / f"growth-{n}"
        folder.mkdir()
        r = run_child("curate_growth", args, folder, table_rows=n)
        shutil.rmtree(folder, ignore_errors=True)
        if r.get("status") == "ok":
            r["note"] = (
                f"dedup {r['breakdown_s'].get('dedup')} s, index write "
                f"{r['breakdown_s'].get('index_write')} s; the curates' peak RSS "
                f"{r['curate_peak_rss_mib']} MiB, {r['curate_peak_anon_mib']} MiB of it "
                f"anonymous; planted copies: precision {r['precision']}, recall {r['recall']}"
            )
        out.append(r)
    ok = [r for r in out if r.get("status") == "ok"]
    if len(ok) > 1:
        ok[-1]["vs_smallest"] = round(ok[-1]["seconds"] / ok[0]["seconds"], 2)
    return out


def carry(report: dict[str, Any], previous: Path) -> None:
    """The rows not run this time, and the growth series when it was not, from the last
    results, marked with the run they are from."""
    if not previous.exists():
        return
    old = json.loads(previous.read_text())
    rows = report["rows"]
    ran = {r["row"] for r in rows}
    for r in old.get("rows", []):
        if r["row"] not in ran and r["row"] != "f":
            rows.append({**r, "from_run": r.get("from_run", old["machine"]["date"])})
    rows.sort(key=lambda r: r["row"])
    if not report["curate_growth"]:
        report["curate_growth"] = [
            {**g, "from_run": g.get("from_run", old["machine"]["date"])}
            for g in old.get("curate_growth", [])
        ]


def annotate(rows: list[dict[str, Any]]) -> None:
    """Adds the expectation part of the gate as its own row, and the ratios to the goals."""
    by = {r["row"]: r for r in rows}
    ok = all(by.get(k, {}).get("status") == "ok" for k in "abcde")
    if not ok:
        return
    for k, goal in (("b", " (goal >= 0.5)"), ("c", "")):
        commits = f"{by[k]['commits']:,} commits"
        by[k]["note"] = f"{by[k]['per_s'] / by['a']['per_s']:.2f} x Parquet{goal}; {commits}"
    pandas_checks = by["d"]["breakdown_s"]["expectations"]
    e = by["e"]
    expectations = e["breakdown_s"].get("expectations", 0.0)
    f = {
        "row": "f",
        "name": "harvest curate, expectations alone (GE)",
        "status": "ok",
        "rows": e["rows"],
        "seconds": round(expectations, 2),
        "per_s": round(e["rows"] / expectations) if expectations else None,
        "peak_rss_mib": e["peak_rss_mib"],
        "note": f"{expectations / pandas_checks:.1f} x pandas checks (goal <= 3)",
    }
    by["d"]["note"] = f"checks alone {pandas_checks:.2f} s; read {by['d']['breakdown_s']['read']} s"
    e["note"] = ", ".join(f"{k} {v}" for k, v in e["breakdown_s"].items())
    e["note"] += f"; {e['seconds'] / by['d']['seconds']:.1f} x pandas"
    rows.insert(rows.index(e) + 1, f)
    for k in "gh":
        r = by[k]
        if r.get("status") == "ok":
            r["note"] = (
                f"precision {r['precision']}, recall {r['recall']} "
                f"({r['recall_at_0.7']} of copies with Jaccard >= 0.7)"
            )


if __name__ == "__main__":
    main()
