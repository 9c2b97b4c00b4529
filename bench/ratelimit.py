"""Rate-limit benchmark: every crawler's defaults against a site that answers 429, one run.

``python -m bench.ratelimit [--articles N] [--limit L] [--window W] [--proxies P]
[--quick] [--rows abcdef] [--regimes retry-after,long-block] [--block-limit BL]
[--block-window BW] [--block-seconds B]``

Besides the two regimes run by default, ``--regimes`` takes ``fixed-window``,
``token-bucket`` and ``per-cookie`` (``L`` per ``W`` with ``Retry-After``, counted in fixed
windows, as a token bucket, or per session cookie), ``listing-limit`` (listing pages held
to a quarter of ``L`` per ``W``, apart from item pages), and ``block-page`` and
``soft-block`` (as ``long-block``, with a 403 block page, or a 200 look-alike of the site's
pages that the site does not count as a page obtained).

The demo site's ``/guarded/`` section, served from its own process, lets each client
address make ``L`` requests in any ``W`` seconds and answers 429 with ``Retry-After``
past that (regime ``retry-after``); or ``BL`` requests in any ``BW`` seconds, then blocks
the address for ``B`` seconds with 429 and no ``Retry-After`` (regime ``long-block``).
Every row runs once per regime, and says which. ``P`` tinyproxies on loopback, started
once, connect out from their own addresses (127.0.0.2, ...), so the site sees each as a
client of its own. Each crawler runs in its own child process, after a reset of the
site's guard. The site counts what each crawler obtained and when; the least time the
limit allows for the row's exits is ``Guard.minimum_seconds``. Prints a table and writes
``bench/results/ratelimit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.crawl import BENCH, CRAWLEE_VENV, HARVEST, PER_PAGE, PYTHON, ensure_crawlee, machine
from bench.site import ROOT, SiteProcess
from harvest.demosite.server import Guard
from tests import proxies as tinyproxies

RESULTS = BENCH / "results" / "ratelimit.json"
ROTATING = "scrapy-rotating-proxies==0.6.2"
SECTION = "/guarded"


@dataclass
class Row:
    key: str
    name: str
    argv: list[str]  # {url}: the site; {proxies}: the proxy URLs, one argument each
    proxied: bool  # through the P proxies, else the direct connection alone
    recipe: bool = False  # harvest: {recipe} is a recipe written for this row
    unavailable: str = ""


def rows() -> list[Row]:
    scrapy = [str(PYTHON), str(BENCH / "scrapy_bare.py"), "{url}", "--path", f"{SECTION}/"]
    rotating = [*scrapy, "--rotating-proxies", "{proxies}"]
    crawlee = [str(CRAWLEE_VENV / "bin" / "python"), str(BENCH / "crawlee_parsel.py"), "{url}"]
    harvest = [str(HARVEST), "crawl", "{recipe}", "--start-url", f"{{url}}{SECTION}/"]
    harvest.append("--no-curate")
    return [
        Row("a", "Scrapy, defaults, no proxies", scrapy, proxied=False),
        Row("b", "scrapy-rotating-proxies, defaults", rotating, proxied=True),
        Row("c", "scrapy-rotating-proxies + AutoThrottle", [*rotating, "--autothrottle"], True),
        Row(
            "d",
            "crawlee ParselCrawler, defaults",
            [*crawlee, "--path", f"{SECTION}/", "--proxies", "{proxies}"],
            proxied=True,
        ),
        Row("e", "harvest, defaults, P proxies", harvest, proxied=True, recipe=True),
        Row("f", "harvest, defaults, direct", harvest, proxied=False, recipe=True),
    ]


def ensure_rotating() -> str:
    """Installs scrapy-rotating-proxies into ``.venv`` if missing; returns why it cannot, or ""."""
    check = [str(PYTHON), "-c", "import rotating_proxies.middlewares, rotating_proxies.policy"]
    if subprocess.run(check, capture_output=True).returncode == 0:
        return ""
    print(f"installing {ROTATING} into .venv ...", file=sys.stderr)
    pip = [str(PYTHON), "-m", "pip", "install", "-q", ROTATING]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode:
        return f"not available (pip install {ROTATING} failed: {done.stderr.strip()[-300:]})"
    done = subprocess.run(check, capture_output=True, text=True)
    if done.returncode:
        return f"not available (it does not import: {done.stderr.strip().splitlines()[-1]})"
    return ""


def write_recipe(folder: Path, proxy_urls: list[str]) -> Path:
    """The demo recipe, pointed at the guarded section; with the proxies, if any."""
    data = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    data.update(
        name="ratelimited",
        follow=[
            {"allow": rf"{SECTION}/page/\d+$", "restrict_css": "nav.pagination"},
            {"allow": f"{SECTION}/article/", "restrict_css": "ul.articles"},
        ],
        item_urls=f"{SECTION}/article/",
    )
    if proxy_urls:
        data["proxies"] = {"urls": proxy_urls}
    path = folder / "ratelimited.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def command(row: Row, url: str, proxy_urls: list[str], recipe: Path | None) -> list[str]:
    argv: list[str] = []
    for arg in row.argv:
        if arg == "{proxies}":
            argv += proxy_urls
        else:
            argv.append(arg.replace("{url}", url).replace("{recipe}", str(recipe)))
    return argv


def run_row(
    row: Row, site: SiteProcess, proxy_urls: list[str], guard: Guard, articles: int, regime: str
) -> dict[str, Any]:
    exits = len(proxy_urls) if row.proxied else 1
    listings = -(-articles // PER_PAGE)
    needed = articles + listings
    minimum = guard.minimum_seconds(needed, exits, listings)
    result: dict[str, Any] = {"regime": regime, "row": row.key, "name": row.name}
    result["exits"] = exits
    result.update(articles=articles, listings=listings, minimum_seconds=round(minimum, 2))
    if row.unavailable:
        return {**result, "status": row.unavailable}
    timeout = 180 + 4 * minimum
    with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as tmp:
        folder = Path(tmp)
        recipe = write_recipe(folder, proxy_urls if row.proxied else []) if row.recipe else None
        argv = command(row, site.url, proxy_urls if row.proxied else [], recipe)
        result["command"] = argv
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARVEST_")}
        env.update(HARVEST_LAKE=str(folder / "lake"), HARVEST_REPORTS=str(folder / "reports"))
        work = folder / "work"  # Scrapy and crawlee run from an empty folder
        work.mkdir()
        site.reset()
        start = time.monotonic()
        with open(folder / "stderr.log", "w+") as stderr:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT if row.recipe else work,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,  # its own process group, so a timeout ends it whole
            )
            try:
                stdout, _ = proc.communicate(timeout=timeout)
                code: int | None = proc.returncode
                status = "ok"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                stdout, _ = proc.communicate()
                code, status = None, f"timed out after {timeout:.0f} s"
            wall = time.monotonic() - start
            stderr.seek(0)
            errors = stderr.read()
    seen = site.guarded()
    lines = stdout.strip().splitlines()
    try:
        reported = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        reported = {}
    if "Traceback" in errors and "rotating_proxies" in errors.split("Traceback", 1)[1]:
        status = "rotating_proxies raised an error (see stderr_tail)"
    span = seen["seconds"]
    statuses: dict[str, int] = {}
    for counts in seen["addresses"].values():
        for key, n in counts.items():
            statuses[key] = statuses.get(key, 0) + n
    result.update(
        status=status,
        exit_code=code,
        articles_200=seen["articles_200"],
        listings_200=seen["listings_200"],
        articles_pct=round(100 * seen["articles_200"] / articles, 1),
        requests=seen["requests"],
        statuses=statuses,
        addresses=seen["addresses"],
        refused=seen.get("refused", {}),
        per_second=seen.get("per_second", {}),
        wall_seconds=round(wall, 2),
        span_seconds=round(span, 2),
        span_over_minimum=round(span / minimum, 2) if minimum > 0 else None,
        reported=summarise(reported),
    )
    if status != "ok" or code:
        result["stderr_tail"] = errors[-2000:]
    return result


def summarise(reported: dict[str, Any]) -> dict[str, Any]:
    """The crawler's own last JSON line; harvest's account without its bulky parts."""
    account = reported.get("account")
    if not isinstance(account, dict):
        return reported
    keep = ["scheduled", "fetched", "items", "retries", "given_up", "given_up_total"]
    keep += ["throttled_responses", "banned_responses", "broken_chains", "exits"]
    return {
        "account": {k: account[k] for k in keep if k in account},
        "rows_committed": reported.get("rows_committed"),
    }


def table(results: list[dict[str, Any]]) -> str:
    head = f"{'regime':<11} {'row':<44} {'articles':>15} {'listings':>8} {'exit':>4} {'wall s':>7}"
    head += f" {'span s':>7} {'min s':>7} {'span/min':>8} {'429s':>6}"
    lines = [head, "-" * len(head)]
    for r in results:
        name = f"{r['regime']:<11} {'(' + r['row'] + ') ' + r['name']:<44}"
        if "articles_200" not in r:
            lines.append(f"{name} {r['status']}")
            continue
        got = f"{r['articles_200']} ({r['articles_pct']:.0f}%)"
        listings = f"{r['listings_200']}/{r['listings']}"
        code = "-" if r["exit_code"] is None else r["exit_code"]
        ratio = "-" if r["span_over_minimum"] is None else f"{r['span_over_minimum']:.2f}"
        cells = f"{got:>15} {listings:>8} {code:>4} {r['wall_seconds']:>7.1f}"
        cells += f" {r['span_seconds']:>7.1f} {r['minimum_seconds']:>7.1f} {ratio:>8}"
        line = f"{name} {cells} {r['statuses'].get('429', 0):>6}"
        if r["status"] != "ok":
            line += f"  {r['status']}"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--articles", type=int, default=1300)
    parser.add_argument("--limit", type=int, default=10, help="requests per address and window")
    parser.add_argument("--window", type=float, default=1.0, help="seconds")
    parser.add_argument("--proxies", type=int, default=4, help="tinyproxies, one exit each")
    parser.add_argument("--quick", action="store_true", help="300 articles: a check")
    parser.add_argument("--rows", default="abcdef", help="which rows to run, e.g. aef")
    parser.add_argument(
        "--regimes", default="retry-after,long-block", help="which, comma-separated"
    )
    parser.add_argument("--block-limit", type=int, default=20, help="long-block: requests a window")
    parser.add_argument("--block-window", type=float, default=2.0, help="long-block: seconds")
    parser.add_argument("--block-seconds", type=float, default=10.0, help="long-block: block")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.articles = 300
    if not tinyproxies.available():
        sys.exit(tinyproxies.MISSING)

    todo = [row for row in rows() if row.key in args.rows]
    for row in todo:
        row.name = row.name.replace("P proxies", f"{args.proxies} proxies")
    if any(row.key in "bc" for row in todo):
        missing = ensure_rotating()
        for row in todo:
            row.unavailable = missing if row.key in "bc" else row.unavailable
    if any(row.key == "d" for row in todo):
        missing = ensure_crawlee()
        for row in todo:
            row.unavailable = missing if row.key == "d" else row.unavailable

    block = (args.block_limit, args.block_window, args.block_seconds)
    guards = {
        "retry-after": Guard(args.limit, args.window, 0),
        "long-block": Guard(*block, ban_status=429),
        # not run by default: the same crawlers against the rest of the family the tests
        # draw from
        "fixed-window": Guard(args.limit, args.window, 0, regime="fixed"),
        "token-bucket": Guard(args.limit, args.window, 0, regime="bucket"),
        "per-cookie": Guard(args.limit, args.window, 0, key="cookie"),
        "block-page": Guard(*block, ban_status=403),
        # listing pages limited apart, and harder, than item pages
        "listing-limit": Guard(args.limit, args.window, 0, listing_limit=max(1, args.limit // 4)),
        # a blocked client gets 200 look-alikes of the site's pages; the site counts only
        # real pages as obtained, so a crawl that loses items must say so by its exit
        "soft-block": Guard(*block, ban_status=200),
    }
    regimes = [r for r in args.regimes.split(",") if r]
    if unknown := set(regimes) - set(guards):
        parser.error(f"--regimes: {', '.join(sorted(unknown))}: one of {', '.join(guards)}")
    listings = -(-args.articles // PER_PAGE)
    pages = args.articles + listings
    report: dict[str, Any] = {"machine": machine()}
    report["machine"]["versions"]["scrapy-rotating-proxies"] = rotating_version()
    report["site"] = {"articles": args.articles, "listings": listings, "proxies": args.proxies}
    report["regimes"] = {
        name: {
            "limit": guards[name].limit,
            "window_seconds": guards[name].window,
            "block_seconds": guards[name].ban_seconds,
            "retry_after": not guards[name].ban_seconds,
            "block_status": guards[name].ban_status,
            "shape": guards[name].regime,
            "per": guards[name].key,
            "listing_limit": guards[name].listing_limit,
            "minimum_seconds": {
                "proxies": round(guards[name].minimum_seconds(pages, args.proxies, listings), 2),
                "direct": round(guards[name].minimum_seconds(pages, 1, listings), 2),
            },
        }
        for name in regimes
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-tinyproxy-") as tmp:
        started = tinyproxies.start(args.proxies, Path(tmp))
        try:
            proxy_urls = [p.url for p in started]
            report["site"]["proxy_addresses"] = [p.bind for p in started]
            for regime in regimes:
                guard = guards[regime]
                limits = (guard.limit, guard.window, guard.ban_seconds)
                shape = (guard.regime, guard.ban_status, guard.key)
                listing = guard.listing_limit
                with SiteProcess(args.articles, *limits, *shape, guard_listing=listing) as site:
                    for row in todo:
                        print(f"{regime} ({row.key}) {row.name} ...", file=sys.stderr)
                        results.append(run_row(row, site, proxy_urls, guard, args.articles, regime))
        finally:
            tinyproxies.stop(started)
    report["rows"] = results

    print(f"\nrate-limit benchmark, {report['machine']['date']}, {os.cpu_count()} CPUs")
    print(
        f"site: /guarded/, {args.articles} articles + {listings} listing pages; "
        f"{args.proxies} tinyproxies"
    )
    for name, regime in report["regimes"].items():
        past = (
            "429 + Retry-After"
            if regime["retry_after"]
            else (
                f"blocked {regime['block_seconds']:g} s ({regime['block_status']}, no Retry-After)"
            )
        )
        least = regime["minimum_seconds"]
        print(
            f"{name}: {past} past {regime['limit']} requests per address in "
            f"{regime['window_seconds']:g} s; least time {least['proxies']} s through "
            f"{args.proxies} exits, {least['direct']} s through one"
        )
    print()
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten to {args.out}")


def rotating_version() -> str | None:
    code = "import importlib.metadata as m; print(m.version('scrapy-rotating-proxies'))"
    done = subprocess.run([str(PYTHON), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or None


if __name__ == "__main__":
    main()
