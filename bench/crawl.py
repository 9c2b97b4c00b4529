"""Crawl benchmark: harvest against bare Scrapy, crawlee and scrapy-playwright, one run.

``python -m bench.crawl [--articles N] [--js-articles M] [--quick] [--rows abcdefj]``

Scale-out over workers is measured apart, on a site whose answers wait as a network's do
(``bench/scaleout.py``).

Row j is row f through four tinyproxies on loopback (``tests/proxies.py``), started for the
run: a browser context a proxy, against row f's one, at about the same pages/s if the
proxies cost nothing.

Every crawler runs in its own child process against the same demo site, itself served
from another process. Pages are counted by the site server, memory is the summed RSS
(and PSS) of the crawler's process tree, sampled from /proc. Prints a table and writes
everything, RSS against pages included, to ``bench/results/crawl.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.site import ROOT, SiteProcess
from tests import proxies as tinyproxies

BENCH = ROOT / "bench"
RESULTS = BENCH / "results" / "crawl.json"
PYTHON = ROOT / ".venv" / "bin" / "python"
HARVEST = ROOT / ".venv" / "bin" / "harvest"
CRAWLEE_VENV = BENCH / ".venv-crawlee"
CRAWLEE = "crawlee[parsel]==1.11.0"
PER_PAGE = 20  # the demo site's listing size
SAMPLE_SECONDS = 0.25
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


@dataclass
class Row:
    key: str
    name: str
    argv: list[str]
    section: str  # "static" or "js": which site it crawls
    env: dict[str, str] = field(default_factory=dict)
    in_repo: bool = False  # run from the project root (harvest needs sources/), else a temp dir
    proxies: int = 0  # through this many tinyproxies, given in HARVEST_CRAWL_PROXIES
    unavailable: str = ""  # why it cannot run here, if it cannot


# --- memory of a process tree, from /proc


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                # the command name may hold spaces and parentheses: split after the last ")"
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_memory(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over ``pids``; PSS shares Chromium's common pages out."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss += int(f.read().split()[1]) * PAGE_SIZE
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
        except (OSError, IndexError, ValueError):
            continue  # gone, or a zombie
    return rss / MIB, pss / MIB


class Sampler(threading.Thread):
    """Samples the tree's memory and the pages the site has served, until stopped."""

    def __init__(self, pid: int, site: SiteProcess):
        super().__init__(daemon=True)
        self.pid = pid
        self.site = site
        self.samples: list[list[float]] = []  # [seconds, RSS MiB, PSS MiB, pages]
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while True:
            rss, pss = tree_memory(process_tree(self.pid))
            try:
                pages = self.site.stats()["pages"]
            except OSError:
                pages = -1
            self.samples.append([round(time.monotonic() - start, 2), rss, pss, pages])
            if self.done.wait(SAMPLE_SECONDS):
                return


# --- the rows


def rows(workers: bool) -> list[Row]:
    harvest_static = [str(HARVEST), "crawl", "demo", "--start-url", "{url}/", "--no-curate"]
    harvest_js = [str(HARVEST), "crawl", "demo_js", "--start-url", "{url}/js/", "--no-curate"]
    two_workers = Row(
        "d", "harvest, 2 workers", [*harvest_static, "--workers", "2"], "static", in_repo=True
    )
    if not workers:
        two_workers.unavailable = "not available (harvest crawl has no --workers)"
    return [
        Row(
            "a", "Scrapy, defaults", [str(PYTHON), str(BENCH / "scrapy_bare.py"), "{url}"], "static"
        ),
        Row(
            "b",
            "crawlee ParselCrawler, defaults",
            [str(CRAWLEE_VENV / "bin" / "python"), str(BENCH / "crawlee_parsel.py"), "{url}"],
            "static",
        ),
        Row("c", "harvest, parse + lake", harvest_static, "static", in_repo=True),
        two_workers,
        Row(
            "e",
            "scrapy-playwright, defaults",
            [str(PYTHON), str(BENCH / "scrapy_bare.py"), "{url}", "--render"],
            "js",
        ),
        Row("f", "harvest, browser + lake", harvest_js, "js", in_repo=True),
        Row("j", "harvest, browser + lake, 4 proxies", harvest_js, "js", in_repo=True, proxies=4),
    ]


def has_workers_option() -> bool:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    help_text = subprocess.run(
        [str(HARVEST), "crawl", "--help"], cwd=ROOT, env=env, capture_output=True, text=True
    ).stdout
    return "--workers" in help_text


def ensure_crawlee() -> str:
    """Creates ``bench/.venv-crawlee`` on first use; returns why it cannot, or ""."""
    marker = CRAWLEE_VENV / ".installed"
    if marker.exists():
        return ""
    python = shutil.which("python3.11") or sys.executable
    pip = [str(CRAWLEE_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    print(f"creating {CRAWLEE_VENV.relative_to(ROOT)} with {CRAWLEE} ...", file=sys.stderr)
    for step in (
        [python, "-m", "venv", str(CRAWLEE_VENV)],
        [*pip, "--upgrade", "pip"],
        [*pip, CRAWLEE],
    ):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            return f"not available ({' '.join(step[-2:])} failed: {done.stderr.strip()[-300:]})"
    marker.write_text(CRAWLEE + "\n")
    return ""


def run_row(
    row: Row, site: SiteProcess, timeout: float, proxy_urls: list[str] | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {"row": row.key, "name": row.name, "section": row.section}
    if row.unavailable:
        return {**result, "status": row.unavailable}
    argv = [arg.replace("{url}", site.url) for arg in row.argv]
    result["command"] = argv
    with tempfile.TemporaryDirectory(prefix="bench-crawl-") as tmp:
        env = {**os.environ, "HARVEST_LAKE": str(Path(tmp) / "lake"), **row.env}
        if proxy_urls:
            env["HARVEST_CRAWL_PROXIES"] = ",".join(proxy_urls)
            result["proxies"] = len(proxy_urls)
        site.reset()
        start = time.monotonic()
        with open(Path(tmp) / "stderr.log", "w+") as stderr:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT if row.in_repo else tmp,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,  # its own process group, so a timeout ends it whole
            )
            sampler = Sampler(proc.pid, site)
            sampler.start()
            try:
                stdout, _ = proc.communicate(timeout=timeout)
                status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                stdout, _ = proc.communicate()
                status = f"timed out after {timeout:.0f} s"
            wall = time.monotonic() - start
            sampler.done.set()
            sampler.join()
            stderr.seek(0)
            errors = stderr.read()[-2000:]
    served = site.stats()
    lines = stdout.strip().splitlines()
    try:
        reported = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        reported = {}
    samples = sampler.samples
    crawl_seconds = served["seconds"]
    result.update(
        status=status,
        pages=served["pages"],
        items=reported.get("items"),
        crawler_pages=reported.get("pages"),
        rows_committed=reported.get("rows_committed"),  # harvest's rows only
        api_calls=served["api_calls"],
        wall_seconds=round(wall, 2),
        crawl_seconds=round(crawl_seconds, 2),
        pages_per_s=round(served["pages"] / crawl_seconds, 1) if crawl_seconds > 0 else None,
        pages_per_half_second=served.get("per_half_second"),
        in_flight_mean=served.get("in_flight_mean"),
        peak_rss_mib=round(max((s[1] for s in samples), default=0), 1),
        peak_pss_mib=round(max((s[2] for s in samples), default=0), 1),
        memory_at_pages={str(n): memory_at(samples, n) for n in (500, 5000)},
        samples_columns=["seconds", "rss_mib", "pss_mib", "pages"],
        samples=[[s[0], round(s[1], 1), round(s[2], 1), s[3]] for s in samples],
    )
    if status != "ok":
        result["stderr_tail"] = errors
    return result


def memory_at(samples: list[list[float]], pages: int) -> dict[str, float] | None:
    """Memory at the first sample taken once ``pages`` pages were served, if ever."""
    first = next((s for s in samples if s[3] >= pages), None)
    return {"rss_mib": round(first[1], 1), "pss_mib": round(first[2], 1)} if first else None


def ceiling(articles: int, seconds: float) -> dict[str, Any]:
    with SiteProcess(articles) as site:
        done = subprocess.run(
            [str(PYTHON), "-m", "bench.loadgen", site.url, "--seconds", str(seconds)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    if done.returncode:
        return {"error": done.stderr.strip()[-500:]}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- facts and the table


def machine(versions: dict[str, Any] | None = None) -> dict[str, Any]:
    """Facts about this machine and checkout; ``versions`` default to the crawlers'."""

    def output(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return ""

    crawlee_python = CRAWLEE_VENV / "bin" / "python"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "memory_mib": round(os.sysconf("SC_PHYS_PAGES") * PAGE_SIZE / MIB),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git_commit": output("git", "rev-parse", "HEAD"),
        "git_dirty": bool(output("git", "status", "--porcelain")),
        "versions": versions
        or {
            "scrapy": version("scrapy"),
            "scrapy-playwright": version("scrapy-playwright"),
            "playwright": version("playwright"),
            "crawlee": output(
                str(crawlee_python),
                "-c",
                "import importlib.metadata as m; print(m.version('crawlee'))",
            )
            if crawlee_python.exists()
            else None,
            "chromium": (output("/usr/bin/chromium", "--version").splitlines() or [""])[0],
        },
    }


def table(results: list[dict[str, Any]]) -> str:
    head = f"{'row':<36} {'pages':>6} {'items':>6} {'wall s':>7} {'crawl s':>7} {'pages/s':>8}"
    head += f" {'peak RSS MiB':>12} {'peak PSS MiB':>12}"
    lines = [head, "-" * len(head)]
    for r in results:
        name = f"({r['row']}) {r['name']}"
        if "pages" not in r:
            lines.append(f"{name:<36} {r['status']}")
            continue
        cells = [r["pages"], r["items"], r["wall_seconds"], r["crawl_seconds"], r["pages_per_s"]]
        cells += [r["peak_rss_mib"], r["peak_pss_mib"]]
        widths = [6, 6, 7, 7, 8, 12, 12]
        line = f"{name:<36} " + " ".join(
            f"{'-' if c is None else c:>{w}}" for c, w in zip(cells, widths, strict=True)
        )
        if r["status"] != "ok":
            line += f"  {r['status']}"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--articles", type=int, default=1000, help="articles on the plain site")
    parser.add_argument(
        "--js-articles", type=int, help="for the rendered rows (default: --articles)"
    )
    parser.add_argument("--quick", action="store_true", help="300 articles, 60 rendered: a check")
    parser.add_argument("--rows", default="abcdefj", help="which rows to run, e.g. ace")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.articles, args.js_articles = 300, args.js_articles or 60
    js_articles = args.js_articles or args.articles
    ceiling_seconds = 2.0 if args.quick else 5.0

    report: dict[str, Any] = {"machine": machine(), "articles": args.articles}
    report["js_articles"] = js_articles
    print("site server ceiling (article pages, 16 keep-alive connections) ...", file=sys.stderr)
    report["site_ceiling"] = ceiling(args.articles, ceiling_seconds)
    todo = [row for row in rows(has_workers_option()) if row.key in args.rows]
    if any(row.key == "b" for row in todo):
        missing = ensure_crawlee()
        for row in todo:
            row.unavailable = row.unavailable or (missing if row.key == "b" else "")
    for row in todo:
        if row.proxies and not tinyproxies.available():
            row.unavailable = row.unavailable or f"not available ({tinyproxies.MISSING})"
    proxies_needed = max((row.proxies for row in todo if not row.unavailable), default=0)

    results = []
    with (
        SiteProcess(args.articles) as static,
        SiteProcess(js_articles) as js,
        tempfile.TemporaryDirectory(prefix="bench-crawl-proxies-") as proxy_dir,
        tinyproxies.running(proxies_needed, Path(proxy_dir)) as pool,
    ):
        for row in todo:
            site = js if row.section == "js" else static
            n = js_articles if row.section == "js" else args.articles
            expected = n + -(-n // PER_PAGE)
            timeout = 180 + (2.0 if row.section == "js" else 0.2) * expected
            print(f"({row.key}) {row.name}: {expected} pages ...", file=sys.stderr)
            result = run_row(row, site, timeout, [p.url for p in pool[: row.proxies]])
            result["expected_pages"] = expected
            if result.get("pages", expected) != expected:
                result["status"] += f", {result['pages']} of {expected} pages"
            results.append(result)
    report["rows"] = results

    c = report["site_ceiling"]
    print(f"\ncrawl benchmark, {report['machine']['date']}, {os.cpu_count()} CPUs")
    print(f"site: {args.articles} articles, {js_articles} in the JS section, {PER_PAGE} a listing")
    figure = f"{c['requests_per_s']} req/s" if "requests_per_s" in c else c["error"]
    print(f"site server ceiling: {figure}\n")
    print(table(results))
    for r in results:
        at = r.get("memory_at_pages", {}) if r["row"] in "fj" else {}
        for n, m in at.items():
            if m:
                print(
                    f"({r['row']}) memory at page {n}: RSS {m['rss_mib']} MiB, "
                    f"PSS {m['pss_mib']} MiB"
                )
    direct = next((r for r in results if r["row"] == "f" and r.get("pages_per_s")), None)
    for r in results:
        if direct and r["row"] == "j" and r.get("pages_per_s"):
            r["pages_per_s_over_direct"] = round(r["pages_per_s"] / direct["pages_per_s"], 2)
            print(f"(j) {r['pages_per_s_over_direct']}x row f's pages/s, through 4 proxies")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
