"""API benchmark: harvest's API source against plain httpx loops, on the same API and limit.

``python -m bench.api [--records N] [--size S] [--limit L] [--fail-rate F]
[--latency-ms LO-HI] [--repeat R] [--regimes limit,none] [--out FILE] [--quick]``

The demo site's JSON API (``/api/v1/paged/articles``, page numbers, ``S`` records a page)
is served from its own process so that no client shares its GIL, with ``N`` records,
answers that wait ``LO-HI`` ms as an API across a network does, and a share ``F`` of
requests answered 500. Two regimes, each client run once in each:

- ``limit``: ``L`` requests a second per client address, past it a 429 with
  ``Retry-After`` (a sliding window). The least time the limit allows is
  ``Guard.minimum_seconds`` for the pages there are.
- ``none``: no limit: throughput alone.

The clients: harvest (``harvest crawl`` of an API recipe with its defaults, page paging
with ``total: total_pages``, in a child process, timed by its own
``elapsed_time_seconds``), a plain sequential httpx loop, and an asyncio + httpx loop with
a semaphore of 16 that reads the page count off the first page. Both loops wait out a
``Retry-After`` and try a 500 again, as such loops are written. Completeness is the share
of the API's records each obtained. Each client runs ``R`` times in turn (``--repeat``), a
fresh server each time, and its median run by time is the one shown: a shared machine's
load moves single runs. Prints a table
and writes ``bench/results/api.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.crawl import BENCH, HARVEST, PYTHON, machine
from bench.site import ROOT
from harvest.demosite.guard import Guard

RESULTS = BENCH / "results" / "api.json"
PATH = "/api/v1/paged/articles"
TOKEN = "bench-token"
SEMAPHORE = 16
TRIES = 10  # a 500 or 429 is tried again this often by the loops


def serve(records: int, limit: int, fail_rate: float, latency: tuple[float, float]) -> None:
    """The child: serves the API and prints its URL; ends when stdin closes."""
    from harvest.demosite import DemoApi, DemoSite, generate

    site = generate(400, seed=7)
    api = DemoApi(
        site,
        token=TOKEN,
        guard=Guard(limit, 1.0, 0.0) if limit else None,
        fail_rate=fail_rate,
        seed=11,
    )
    api.add(records - len(api.records))
    with DemoSite(site, latency=latency, api=api) as server:
        print(server.url, flush=True)
        sys.stdin.read()


class Served:
    def __init__(self, records: int, limit: int, fail_rate: float, latency: str):
        argv = [str(PYTHON), "-m", "bench.api", "--serve", "--records", str(records)]
        argv += ["--limit", str(limit), "--fail-rate", str(fail_rate), "--latency-ms", latency]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def harvest(url: str, size: int, workdir: Path) -> tuple[set[int], float]:
    recipe = yaml.safe_load((ROOT / "sources" / "demo_api.yaml").read_text())
    recipe["name"] = "bench_api"
    recipe["api"]["paging"] = {"style": "page", "size": size, "total": "total_pages"}
    recipe["api"].pop("since")
    path = workdir / "bench_api.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {
        **os.environ,
        "HARVEST_LAKE": str(workdir / "lake"),
        "HARVEST_REPORTS": str(workdir / "reports"),
        "DEMO_API_TOKEN": TOKEN,
    }
    argv = [str(HARVEST), "crawl", str(path), "--start-url", url + PATH, "--no-curate", "--fresh"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    from ingestion.lake import Lake

    urls = Lake(workdir / "lake").read("raw/bench_api", columns=["url"])["url"].to_pylist()
    return {int(u.rsplit("/", 1)[1]) for u in urls}, float(summary["stats"]["elapsed_time_seconds"])


def _get(client: httpx.Client, url: str) -> httpx.Response:
    for _ in range(TRIES):
        response = client.get(url)
        if response.status_code == 429:
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        if response.status_code >= 500:
            continue
        return response
    return response


def sequential(url: str, size: int) -> tuple[set[int], float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ids: set[int] = set()
    start = time.monotonic()
    with httpx.Client(headers=headers, timeout=30) as client:
        page = 1
        while True:
            response = _get(client, f"{url}{PATH}?page={page}&per_page={size}")
            if response.status_code != 200:
                break
            data = response.json()["data"]
            ids.update(r["id"] for r in data)
            if len(data) < size:
                break
            page += 1
    return ids, time.monotonic() - start


async def _aget(client: httpx.AsyncClient, url: str, gate: asyncio.Semaphore) -> httpx.Response:
    async with gate:
        for _ in range(TRIES):
            response = await client.get(url)
            if response.status_code == 429:
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code >= 500:
                continue
            return response
    return response


async def _gathered(url: str, size: int) -> set[int]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    gate = asyncio.Semaphore(SEMAPHORE)
    limits = httpx.Limits(max_connections=SEMAPHORE)
    async with httpx.AsyncClient(headers=headers, timeout=30, limits=limits) as client:
        first = await _aget(client, f"{url}{PATH}?page=1&per_page={size}", gate)
        body = first.json()
        ids = {r["id"] for r in body["data"]}
        pages = range(2, int(body["total_pages"]) + 1)
        answers = await asyncio.gather(
            *(_aget(client, f"{url}{PATH}?page={p}&per_page={size}", gate) for p in pages)
        )
    for response in answers:
        if response.status_code == 200:
            ids.update(r["id"] for r in response.json()["data"])
    return ids


def gathered(url: str, size: int) -> tuple[set[int], float]:
    start = time.monotonic()
    ids = asyncio.run(_gathered(url, size))
    return ids, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--fail-rate", type=float, default=0.02)
    parser.add_argument("--latency-ms", default="20-40")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 records, one run each")
    parser.add_argument(
        "--regimes", default="limit,none", help="which regimes to run: limit, none or both"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    lo, _, hi = args.latency_ms.partition("-")
    if args.serve:
        serve(args.records, args.limit, args.fail_rate, (float(lo) / 1e3, float(hi or lo) / 1e3))
        return
    records = 1000 if args.quick else args.records
    pages = -(-records // args.size)
    clients = {"harvest": None, "sequential httpx": sequential, "asyncio+httpx, sem 16": gathered}
    rows: list[dict[str, Any]] = []
    repeat = 1 if args.quick else args.repeat
    regimes = [(r, lim) for r, lim in (("limit", args.limit), ("none", 0)) if r in args.regimes]
    for regime, limit in regimes:
        least = Guard(limit, 1.0, 0.0).minimum_seconds(pages, 1) if limit else None
        runs: dict[str, list[tuple[set[int], float]]] = {name: [] for name in clients}
        for _ in range(repeat):
            for name, run in clients.items():
                served = Served(records, limit, args.fail_rate, args.latency_ms)
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        if run is None:
                            runs[name].append(harvest(served.url, args.size, Path(tmp)))
                        else:
                            runs[name].append(run(served.url, args.size))
                finally:
                    served.close()
        for name, done in runs.items():
            ids, seconds = sorted(done, key=lambda r: r[1])[len(done) // 2]
            got = len(ids & set(range(1, records + 1)))
            row = {
                "regime": regime,
                "client": name,
                "records": got,
                "completeness": round(got / records, 4),
                "seconds": round(seconds, 2),
                "runs_seconds": [round(s, 2) for _, s in done],
                "least_complete": min(len(i & set(range(1, records + 1))) for i, _ in done),
                "records_per_s": round(got / seconds, 1),
                "least_seconds": round(least, 2) if least is not None else None,
                "x_least": round(seconds / least, 2) if least else None,
            }
            rows.append(row)
            print(
                f"{regime:6} {name:24} {row['completeness']:7.2%} {row['seconds']:7.2f} s "
                f"{row['records_per_s']:8.1f} rec/s  x least {row['x_least']}  "
                f"runs {row['runs_seconds']}",
                flush=True,
            )
    result = {
        "settings": {
            "records": records,
            "page_size": args.size,
            "pages": pages,
            "limit_per_s": args.limit,
            "fail_rate": args.fail_rate,
            "latency_ms": args.latency_ms,
            "repeat": repeat,
        },
        "rows": rows,
        "machine": machine({"httpx": httpx.__version__}),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
