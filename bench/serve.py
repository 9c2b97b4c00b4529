"""Serving benchmark: ``POST /predict`` on a real ``harvest serve`` against the same model
called in-process, and ``harvest predict`` over a long file.

``python -m bench.serve [--requests N] [--rows R] [--log-sample S]``

Two models of the demo's labels are trained and registered in a temporary lake: the
n-gram model (the champion) and the frozen MiniLM one (the challenger, ``?alias=``).
For each: one text scored in-process (``training.pyfunc.Scorer.predict``, the DataFrame a
user gets, and its bare ``proba``) and over HTTP, each text on both sides one straight
after the other, the extra p50 the median of the pairs' differences; in-process throughput
scoring batches of 256; and over HTTP the p50, p99 and throughput of one-text requests
from 1, 8 and 32 concurrent clients, and of 16- and 64-text requests from 32, each
32-client row between two in-process batch passes that give its ratio. One-text
requests from 32 clients also go to a bare ASGI app on the same uvicorn
(``bench/rawasgi.py``): the stack's floor, and with each text's batch scoring added, the
most one process could answer (a row's ``one_text_serial_bound_over_batch``). One-text
rows read the service's CPU from ``/proc`` (its event loop thread, other threads,
children) and the clients', a request; with the batch scoring, every core busy with
nothing else would answer at most ``all_cores_bound_over_batch``, however many processes
shared the work. The clients are kept-alive asyncio connections in this process, lean
enough (tens of microseconds a request) that the figures are the server's; ``requests``
in threads spent about 1 ms of a shared core on each call.
Goals: at most 2 ms more p50 over HTTP at concurrency 1 than in-process; at concurrency
32, with micro-batching, at least 0.8x the in-process batch throughput. Then
``harvest predict`` scores R and R/5 rows of JSONL; its peak RSS should not grow with
the file. Writes ``bench/results/serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import requests

from bench.crawl import machine
from harvest.demosite import generate
from ingestion.lake import Lake

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "serve.json"
HARVEST = [sys.executable, "-m", "harvest.cli"]


def harvest(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [*HARVEST, *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"harvest {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def labelled(lake: Lake, n: int) -> list[str]:
    """curated/demo and labels/demo from the demo site's articles; returns the texts."""
    arts = [a for a in generate(n + 40, seed=5).articles if not a.planted][:n]
    ids = [f"h{i}" for i in range(len(arts))]
    texts = [" ".join(a.paragraphs) for a in arts]
    lake.append(
        "curated/demo",
        pa.table(
            {
                "content_sha256": ids,
                "dup_group": ids,
                "source": ["demo"] * len(ids),
                "url": [f"http://site/{i}" for i in ids],
                "body": texts,
            }
        ),
    )
    lake.overwrite("labels/demo", pa.table({"row_id": ids, "label": [a.label for a in arts]}))
    return texts


def fresh(texts: list[str], i: int, tag: str) -> str:
    """Text ``i``, made unlike any scored before: the embedding model caches the vectors
    of texts it has seen, which would flatter whichever side sees a text second."""
    return f"{texts[i % len(texts)]} ({tag} {i})"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(call: Callable[[Any], object], arg: object) -> float:
    start = time.perf_counter()
    call(arg)
    return time.perf_counter() - start


def in_process(
    scorer: Any,
    texts: list[str],
    n: int,
    post: Callable[[str], None],
    quiet: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """One text at a time, in-process (``predict``, and the bare ``proba``) and over HTTP
    (``post``), each text on both sides one straight after the other, which side first
    alternating: a MiniLM text's cost follows its length, so both sides score the same
    ones, and a pair's two calls meet the same machine, which a busy moment slows by more
    than the route costs. The extra is the median of the pairs' differences. Then batches
    of 256 in-process, each once ``quiet`` returns: the prediction log's child working on
    the paired requests' rows beside them had halved the rate of a pass."""
    scorer.predict([fresh(texts, i, "warm") for i in range(8)])
    one, bare, http, extra = [], [], [], []
    for i in range(n):
        if i % 2:
            over = timed(post, fresh(texts, i, "post"))
            inside = timed(scorer.predict, [fresh(texts, i, "one")])
        else:
            inside = timed(scorer.predict, [fresh(texts, i, "one")])
            over = timed(post, fresh(texts, i, "post"))
        one.append(inside)
        http.append(over)
        extra.append(over - inside)
        bare.append(timed(scorer.proba, [fresh(texts, i, "bare")]))
    # the median of three passes: one pass met a busy moment
    rates = [batch_rate(scorer, texts, 2048, f"batch {r}", quiet) for r in range(3)]
    return {
        "p50_ms": round(1000 * statistics.median(one), 3),
        "p50_ms_proba": round(1000 * statistics.median(bare), 3),
        "http_p50_ms_same_texts": round(1000 * statistics.median(http), 3),
        "extra_p50_ms_paired": round(1000 * statistics.median(extra), 3),
        "batch_texts_per_s": round(statistics.median(rates), 1),
    }


def batch_rate(scorer: Any, texts: list[str], n: int, tag: str, quiet: Callable[[], None]) -> float:
    """Texts a second scoring ``n`` texts not scored before in batches of 256, in-process,
    once ``quiet`` returns."""
    batch = [fresh(texts, i, tag) for i in range(n)]
    quiet()
    start = time.perf_counter()
    for i in range(0, len(batch), 256):
        scorer.predict(batch[i : i + 256])
    return len(batch) / (time.perf_counter() - start)


def beside(
    scorer: Any, texts: list[str], rate: float, tag: str, quiet: Callable[[], None]
) -> Callable[[Callable[[], dict[str, Any]]], dict[str, Any]]:
    """Runs an HTTP row between two in-process batch passes of about a second each, and
    gives the row the mean of their rates (``batch_texts_per_s_beside``): the machine's
    speed moved by a third between rows minutes apart, and a ratio of two such moments
    measured the machine."""

    rows = itertools.count()

    def run(row: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        n, k = 256 * max(1, round(rate / 256)), next(rows)
        # texts of their own: the MiniLM model caches the vectors of those it scored
        before = batch_rate(scorer, texts, n, f"{tag} {k} before", quiet)
        out = row()
        after = batch_rate(scorer, texts, n, f"{tag} {k} after", quiet)
        return {**out, "batch_texts_per_s_beside": round((before + after) / 2, 1)}

    return run


def poster(url: str, token: str, alias: str) -> Callable[[str], None]:
    """Posts one text on one kept-alive ``http.client`` connection."""
    import http.client

    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(text: str) -> None:
        conn.request("POST", f"/predict?alias={alias}", json.dumps({"text": text}), headers)
        answer = conn.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise SystemExit(f"POST /predict answered {answer.status}: {body[:300]!r}")

    return post


async def _client(
    host: str,
    port: int,
    head: str,
    bodies: list[bytes],
    latencies: list[float],
    expect: bytes = b"HTTP/1.1 200",
) -> None:
    """One kept-alive connection posting ``bodies`` one after another."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for body in bodies:
            start = time.perf_counter()
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", status)
            answer = await reader.readexactly(int(length.group(1)) if length else 0)
            latencies.append(time.perf_counter() - start)
            if not status.startswith(expect):
                raise SystemExit(f"POST /predict answered {status[:40]!r}: {answer[:300]!r}")
    finally:
        writer.close()


def cpu_ticks(pid: int) -> dict[str, int]:
    """Clock ticks of CPU (user and system) that process ``pid`` used: its first thread,
    which runs the event loop, its other threads (scoring, torch's, the log's), and its
    children (the prediction log's encoder)."""
    out = {"event_loop": 0, "other_threads": 0, "children": 0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            used = _ticks(task / "stat")
            kids = (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
        out["event_loop" if task.name == str(pid) else "other_threads"] += used
        for kid in kids:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                out["children"] += _ticks(Path(f"/proc/{kid}/stat"))
    return out


def _ticks(stat: Path) -> int:
    """utime + stime of a ``/proc`` stat file (fields 14 and 15, after the name)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def settle(pid: int, most: float = 60.0) -> None:
    """Waits, ``most`` seconds at most, until the service is idle: the prediction log
    commits the last row's answers after it, and would otherwise take the next row's CPU."""
    deadline = time.monotonic() + most
    last = sum(cpu_ticks(pid).values())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(cpu_ticks(pid).values())
        if now - last <= 0.05 * os.sysconf("SC_CLK_TCK") / 2:  # under 5% of a core
            return
        last = now


def over_http(
    url: str,
    token: str,
    alias: str,
    texts: list[str],
    clients: int,
    n: int,
    per: int = 1,
    empty: bool = False,
    server: int | None = None,
) -> dict[str, Any]:
    """``n`` requests of ``per`` texts from ``clients`` concurrent connections; ``empty``:
    empty texts, which the route refuses (422) after the token, the body's JSON and its
    validation, before any scoring: the ceiling of the FastAPI route, which the fast path
    hands every body it refuses. ``server``: the service's pid, whose CPU a request is
    then given, with this process's (the clients')."""
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", int(where.port or 80)
    head = (
        f"POST /predict?alias={alias} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    )
    each = max(1, n // clients)
    bodies = [
        [
            json.dumps(
                {"text": "" if empty else fresh(texts, k * each + i, f"http {clients}")}
                if per == 1
                else {
                    "texts": [
                        fresh(texts, (k * each + i) * per + j, f"http {clients}x{per}")
                        for j in range(per)
                    ]
                }
            ).encode()
            for i in range(each)
        ]
        for k in range(clients)
    ]
    latencies: list[float] = []

    async def run() -> None:
        expect = b"HTTP/1.1 422" if empty else b"HTTP/1.1 200"
        await asyncio.gather(*(_client(host, port, head, b, latencies, expect) for b in bodies))

    if server:
        settle(server)
    before, mine = (cpu_ticks(server) if server else {}), os.times()
    start = time.perf_counter()
    asyncio.run(run())
    seconds = time.perf_counter() - start
    row: dict[str, Any] = {
        "clients": clients,
        "requests": len(latencies),
        "p50_ms": round(1000 * statistics.median(latencies), 3),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 3),
        "texts_per_s": round(per * len(latencies) / seconds, 1),
        **({"texts_per_request": per} if per > 1 else {}),
    }
    if server:
        tick, after, done = 1000 / os.sysconf("SC_CLK_TCK"), cpu_ticks(server), os.times()
        used = {k: (after[k] - before[k]) * tick for k in after}
        used["clients"] = 1000 * (done.user + done.system - mine.user - mine.system)
        row["cpu_ms_per_request"] = {k: round(v / len(latencies), 4) for k, v in used.items()}
    return row


def bare_stack(texts: list[str], n: int) -> dict[str, float]:
    """One-text requests from 32 clients to a bare ASGI app on the same uvicorn (bench/rawasgi.py):
    the most answers a second this stack gives before the service does anything."""
    port = 9600 + os.getpid() % 1000
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.rawasgi:app", "--port", str(port)]
        + ["--log-level", "warning", "--no-access-log"],
        cwd=ROOT,
    )
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            try:
                requests.post(url, data="{}", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the bare ASGI app did not start") from None
                time.sleep(0.2)
        return over_http(url, "none", "none", texts, 32, n)
    finally:
        server.terminate()
        server.wait(30)


def all_cores_bound(row: dict[str, Any]) -> float:
    """The answers a second over the batch rate that ``os.cpu_count()`` cores would give
    if one-text requests cost only ``row``'s event loop and clients and the batch scoring,
    at the batch rate measured beside the row, as its ratio is."""
    cpu, rate = row["cpu_ms_per_request"], row["batch_texts_per_s_beside"]
    ms = float(cpu["event_loop"] + cpu["clients"]) + 1000 / rate
    return round((os.cpu_count() or 1) * 1000 / ms / rate, 3)


def peak_rss_mib(argv: list[str], env: dict[str, str]) -> float:
    probe = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if code == 0 else -1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    kib = int(done.stdout.strip().splitlines()[-1])
    if kib < 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return round(kib / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=640, help="HTTP requests per row")
    parser.add_argument("--rows", type=int, default=100_000, help="rows for harvest predict")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--log-sample",
        type=float,
        default=1.0,
        help="serve.log_sample: the share of answers logged, drift features included",
    )
    args = parser.parse_args(argv)
    from training import pyfunc, registry
    from training.tracking import Store

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        env = {"HARVEST_LAKE": str(folder / "lake"), "HARVEST_REPORTS": str(folder / "reports")}
        texts = labelled(Lake(env["HARVEST_LAKE"]), 300)
        harvest(["train", "--source", "demo", "--epochs", "3", "--model", "ngram"], env)
        harvest(["train", "--source", "demo", "--epochs", "3", "--model", "embedding"], env)
        harvest(["model", "promote", "harvest-demo", "1"], env)
        store = Store(f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}")
        port = 8600 + os.getpid() % 1000
        token = "bench-token"
        serve_env = {
            **env,
            "HARVEST_SOURCES": str(folder / "sources"),
            "HARVEST_API_TOKEN": token,
            "HARVEST_LABEL_STUDIO_DATA_DIR": str(folder / "ls"),
            "HARVEST_SERVE_LOG_SAMPLE": str(args.log_sample),
        }
        (folder / "sources").mkdir()
        server = subprocess.Popen(
            [*HARVEST, "serve", "--port", str(port), "--no-label-studio"],
            cwd=ROOT,
            env={**os.environ, **serve_env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        rows: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if requests.get(url + "/openapi.json", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("harvest serve did not start")
                time.sleep(0.3)
            # what the FastAPI route answers when it scores nothing: the ceiling of a request
            # the fast path leaves to the route (harvest/service/predictroute.py)
            floor = over_http(url, token, "champion", texts, 32, args.requests * 2, empty=True)
            print(json.dumps({"refused_requests_at_32": floor}))
            bare = bare_stack(texts, args.requests * 4)
            print(json.dumps({"bare_asgi_at_32": bare}))
            for alias, kind in (("champion", "ngram"), ("challenger", "embedding")):
                mv = registry.by_alias(store, "harvest-demo", alias)
                local, _ = registry.local_copy(store, mv)
                over_http(url, token, alias, texts, 4, 64)  # warm the route and the model
                scorer, quiet = pyfunc.load(local), lambda: settle(server.pid)
                base = in_process(scorer, texts, 400, poster(url, token, alias), quiet)
                # each one-text row at least two seconds of the model's batch rate: 640
                # n-gram requests from 32 clients were over in a third of a second
                n = max(args.requests, round(2 * base["batch_texts_per_s"]))
                near = beside(scorer, texts, base["batch_texts_per_s"], alias, quiet)
                http = [
                    over_http(url, token, alias, texts, c, n, server=server.pid) for c in (1, 8)
                ]
                http.append(
                    near(partial(over_http, url, token, alias, texts, 32, n, server=server.pid))
                )
                # where one text a request is bound by HTTP, not by scoring: the same
                # clients with 16 and 64 texts a request, as many as the model scores
                # in a third of the service's 60 s deadline (MiniLM's 32 x 64 texts
                # took longer than the deadline on a slow run, and were answered 503)
                fits = base["batch_texts_per_s"] * 20 / 32
                for per in [p for p in (16, 64) if p <= fits] or [16]:
                    many = max(32, args.requests // 4, round(2 * base["batch_texts_per_s"] / per))
                    http.append(
                        near(
                            partial(
                                over_http,
                                url,
                                token,
                                alias,
                                texts,
                                32,
                                many,
                                per,
                                server=server.pid,
                            )
                        )
                    )
                extra = base["extra_p50_ms_paired"]
                # each 32-client row against the batch rate measured beside it
                ratios = {
                    str(r.get("texts_per_request", 1)): round(
                        r["texts_per_s"] / r["batch_texts_per_s_beside"], 3
                    )
                    for r in http[2:]
                }
                row = {
                    "model": kind,
                    "alias": alias,
                    "version": int(mv.version),
                    "in_process": base,
                    "http": http,
                    "extra_p50_ms_at_1": extra,
                    "extra_p50_ms_at_1_over_proba": round(
                        base["http_p50_ms_same_texts"] - base["p50_ms_proba"], 3
                    ),
                    "goal_extra_p50_ms": 2.0,
                    "throughput_32_over_batch": ratios["1"],
                    "throughput_32_over_batch_by_texts_per_request": ratios,
                    "goal_throughput_ratio": 0.8,
                    # a process that pays the bare stack and a text's batch scoring for
                    # each one-text request, one after the other, as one GIL makes it
                    "one_text_serial_bound_over_batch": round(
                        bare["texts_per_s"] / (bare["texts_per_s"] + base["batch_texts_per_s"]),
                        3,
                    ),
                    # every core of the machine busy with nothing but this route's event loop
                    # work a request, as measured, each text's in-process batch scoring and the
                    # clients: the most any number of processes doing that work could answer
                    "all_cores_bound_over_batch": all_cores_bound(http[2]),
                }
                rows.append(row)
                print(json.dumps(row))
        finally:
            server.terminate()
            server.wait(60)
        data = folder / "texts.jsonl"
        with data.open("w") as f:
            for i in range(args.rows):
                f.write(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n")
        small = folder / "small.jsonl"
        with small.open("w") as f:
            for i in range(args.rows // 5):
                f.write(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n")
        predict = [*HARVEST, "predict", "harvest-demo", "--device", "cpu"]
        memory = {
            "rows_small": args.rows // 5,
            "peak_rss_mib_small": peak_rss_mib(
                [*predict, "--input", str(small), "--output", str(folder / "s.parquet")], env
            ),
            "rows": args.rows,
            "peak_rss_mib": peak_rss_mib(
                [*predict, "--input", str(data), "--output", str(folder / "o.parquet")], env
            ),
        }
        print(json.dumps(memory))
    result = {
        "machine": machine({}),
        "log_sample": args.log_sample,
        "refused_requests_at_32": floor,
        "bare_asgi_at_32": bare,
        "models": rows,
        "predict_memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
