"""Lake benchmark: ingestion into ``raw``, the gate, and near-duplicate detection, each
against a plain peer in the same run. Every contender runs in a child process of its own,
so the peak RSS sampled from /proc is its own.

    python -m bench.lake                 # 1,000,000 rows, 100,000 documents
    python -m bench.lake --quick         # a check: 50,000 rows, 10,000 documents
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
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


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "ingest_bulk": ingest_bulk,
    "ingest_rows": ingest_rows,
    "ingest_parquet": ingest_parquet,
    "gate_harvest": gate_harvest,
    "gate_pandas": gate_pandas,
    "dedup_harvest": dedup_harvest,
    "dedup_datasketch": dedup_datasketch,
}


# --- the parent: runs each child and samples its memory


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_SIZE / MIB
    except (OSError, IndexError, ValueError):
        return 0.0


def run_child(kind: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.lake", "--child", kind, "--dir", str(folder)]
    argv += ["--rows", str(args.rows), "--docs", str(args.docs)]
    argv += ["--batch-rows", str(args.batch_rows), "--commit-rows", str(args.commit_rows)]
    print(f"{kind} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            peak[0] = max(peak[0], rss_mib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    done.set()
    sampler.join()
    result: dict[str, Any] = {"kind": kind, "wall_seconds": round(time.monotonic() - start, 2)}
    if proc.returncode:
        return {**result, "status": f"failed (exit {proc.returncode})"}
    result.update(json.loads(stdout.strip().splitlines()[-1]))
    result.update(status="ok", peak_rss_mib=round(peak[0], 1))
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
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
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
            r = run_child(kind, args, folder)
            rows.append({"row": key, "name": name, **r, "per_s": rate(r, "rows")})
        gates = [
            ("d", "gate_pandas", "plain pandas checks"),
            ("e", "gate_harvest", "harvest curate (all of it)"),
        ]
        for key, kind, name in gates:
            r = run_child(kind, args, lake)
            rows.append({"row": key, "name": name, **r, "per_s": rate(r, "rows")})
        for key, kind, name in (
            ("g", "dedup_datasketch", "datasketch one by one + MinHashLSH"),
            ("h", "dedup_harvest", "harvest Deduper (MinHash.bulk + LSH)"),
        ):
            folder = Path(tmp) / kind
            folder.mkdir()
            r = run_child(kind, args, folder)
            rows.append({"row": key, "name": name, **r, "per_s": rate(r, "docs")})
    annotate(rows)
    print(f"\nlake benchmark, {report['machine']['date']}, {os.cpu_count()} CPUs")
    print(
        f"{args.rows:,} raw rows in Arrow batches of {args.batch_rows:,}, bulk commits of "
        f"{args.commit_rows:,}; {args.docs:,} documents; "
        f"load average {report['machine']['load_average'][0]:.2f}\n"
    )
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten to {args.out}")


def annotate(rows: list[dict[str, Any]]) -> None:
    """Adds the expectation part of the gate as its own row, and the ratios to the goals."""
    by = {r["row"]: r for r in rows}
    ok = all(by[k].get("status") == "ok" for k in "abcde")
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
