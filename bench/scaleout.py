"""Scale-out benchmark: 1, 2 and 4 crawl workers against a site whose answers wait 50-200 ms.

``python -m bench.scaleout [--articles N] [--workers 1 2 4] [--pagination numbered chain]
[--repeat R]``

A crawl across a network waits on the site, not the CPU, which is where more workers
should pay: the goal is 1.8x one worker's pages/s with 2 workers and 3.4x with 4. One
worker is ``harvest crawl demo`` (Scrapy's own scheduler); N workers are ``--workers N``
(the Redis frontier). The site is served twice over, once per pagination shape of
``harvest demo-site --pagination``: ``numbered`` links pages near each listing page, as
most sites do; ``chain`` links only the next one, so listing pages are found one after
another, and no number of workers crawls faster than that chain is walked.

Pages are counted by the site server, from the first page asked for to the last, as
``bench/crawl.py`` counts them (its ``run_row`` runs each crawl here). ``--repeat R``
(default 3) runs the rows R times, interleaved, and keeps each row's median: on a shared
machine one run says little. CPU seconds are the whole crawl's, its workers and Redis
included. Prints a table and writes it with the machine's facts to
``bench/results/scaleout.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.crawl import HARVEST, PER_PAGE, Row, machine, run_row
from bench.site import ROOT, SiteProcess

RESULTS = ROOT / "bench" / "results" / "scaleout.json"
LATENCY_MS = (50.0, 200.0)
TARGETS = {2: 1.8, 4: 3.4}  # speedup over one worker that scale-out should reach


def crawl_row(pagination: str, workers: int) -> Row:
    argv = [str(HARVEST), "crawl", "demo", "--start-url", "{url}/", "--no-curate"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    name = f"{pagination}, {workers} worker{'s' * (workers > 1)}"
    return Row(f"{pagination[0]}{workers}", name, argv, "latency", in_repo=True)


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    expected = args.articles + -(-args.articles // PER_PAGE)
    timeout = 180 + 0.5 * expected
    results = []
    for pagination in args.pagination:
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.workers}
        site = SiteProcess(args.articles, latency_ms=LATENCY_MS, pagination=pagination)
        with site:
            for attempt in range(1, args.repeat + 1):
                for n in args.workers:
                    row = crawl_row(pagination, n)
                    print(
                        f"({row.key}) {row.name}, run {attempt}: {expected} pages ...",
                        file=sys.stderr,
                    )
                    load = os.getloadavg()[0]
                    before = cpu_seconds()
                    result = run_row(row, site, timeout)
                    cpu = cpu_seconds() - before
                    result.pop("samples", None)  # memory over time is bench/crawl.py's
                    result.update(
                        load_average_1m=round(load, 2),
                        expected_pages=expected,
                        cpu_seconds=round(cpu, 2),
                    )
                    if result.get("pages") != expected:
                        result["status"] += f", {result.get('pages')} of {expected} pages"
                    runs[n].append(result)
        one = median_rate(runs[min(args.workers)])
        for n, attempts in runs.items():
            rate = median_rate(attempts)
            speedup = round(rate / one, 2) if rate and one else None
            results.append(
                {
                    "pagination": pagination,
                    "workers": n,
                    "pages_per_s": rate,
                    "speedup": speedup,
                    "target": TARGETS.get(n),
                    "met": None if n not in TARGETS or speedup is None else speedup >= TARGETS[n],
                    "runs": attempts,
                }
            )
    return results


def cpu_seconds() -> float:
    """CPU time of the finished children: a crawl's processes, Redis and workers included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_rate(attempts: list[dict[str, Any]]) -> float | None:
    rates = [r["pages_per_s"] for r in attempts if r.get("status") == "ok" and r["pages_per_s"]]
    return round(statistics.median(rates), 1) if rates else None


def table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'pagination':<10} {'workers':>7} {'pages/s':>8} {'speedup':>8} {'goal':>5} "
        f"{'crawl s':>8} {'wall s':>7} {'CPU s':>6} {'peak RSS MiB':>12} {'load':>5}"
        "  runs"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        last = r["runs"][-1]
        cells = [
            f"{r['pagination']:<10}",
            f"{r['workers']:>7}",
            f"{r['pages_per_s'] or '-':>8}",
            f"{r['speedup'] or '-':>8}",
            f"{r['target'] or '':>5}",
            f"{statistics.median(x['crawl_seconds'] for x in r['runs']):>8.2f}",
            f"{statistics.median(x['wall_seconds'] for x in r['runs']):>7.2f}",
            f"{statistics.median(x['cpu_seconds'] for x in r['runs']):>6.1f}",
            f"{max(x['peak_rss_mib'] for x in r['runs']):>12.0f}",
            f"{max(x['load_average_1m'] for x in r['runs']):>5.1f}",
            " " + ", ".join(str(x["pages_per_s"]) for x in r["runs"]),
        ]
        line = " ".join(cells)
        if last["status"] != "ok":
            line += f"  {last['status']}"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--pagination", nargs="+", default=["numbered", "chain"], choices=["numbered", "chain"]
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row; median kept")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    report: dict[str, Any] = {
        "machine": machine({"scrapy": _version("scrapy"), "redis": _redis_version()}),
        "articles": args.articles,
        "latency_ms": LATENCY_MS,
        "targets": TARGETS,
    }
    report["rows"] = measure(args)
    report["load_average_after"] = os.getloadavg()
    print(
        f"\nscale-out benchmark, {report['machine']['date']}, {os.cpu_count()} CPUs, "
        f"load average before {report['machine']['load_average'][0]:.2f}"
    )
    print(
        f"site: {args.articles} articles, {PER_PAGE} a listing, every answer waits "
        f"{LATENCY_MS[0]:.0f}-{LATENCY_MS[1]:.0f} ms\n"
    )
    print(table(report["rows"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten to {args.out}")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _redis_version() -> str:
    try:
        done = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    except OSError:
        return ""
    return done.stdout.strip()


if __name__ == "__main__":
    main()
