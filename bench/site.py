"""The demo site for benchmarks, served from its own process so no crawler shares its GIL.

``python -m bench.site --articles N`` prints the site's URL on its first
line and serves until stdin closes. Besides the demo site's pages it answers
``/__bench__/stats``: the pages served since the last ``/__bench__/reset``, and when the
first and last were asked for, so every crawler is counted the same way, by the server.

``--guard-limit L --guard-window W`` makes ``/guarded/`` answer 429 with ``Retry-After`` to
a client address past ``L`` requests in ``W`` seconds (without them: the demo site's own
guard, which bans); ``--guard-block B`` then blocks such an address for ``B`` seconds
instead, with 429 and no ``Retry-After``. ``/__bench__/guarded`` reports the guarded
answers since the last reset: 200s and 429s per client address, unique article and listing
pages answered 200, and when the first and last guarded requests came. The reset also
clears the guard.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harvest.demosite.generator import generate
from harvest.demosite.guard import SOFT_BLOCK_PAGE
from harvest.demosite.server import DemoSite, Guard

ROOT = Path(__file__).resolve().parent.parent
STATS = "/__bench__/stats"
RESET = "/__bench__/reset"
GUARDED = "/__bench__/guarded"
SOFT = 0  # the status a soft block's look-alike (a 200) is logged as
SOFT_BLOCK = SOFT_BLOCK_PAGE.encode("utf-8")


class Counter:
    """Pages served, with their times; robots.txt, favicon.ico and the JS section's JSON
    calls are counted apart."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.pages = 0
            self.api = 0
            self.other = 0
            self.first = 0.0
            self.last = 0.0
            self.times: list[float] = []
            self.active = 0  # pages being answered now
            self.area = 0.0  # the integral of ``active`` over time
            self.since = 0.0

    def hit(self, path: str) -> None:
        now = time.monotonic()
        with self.lock:
            if path.startswith("/js/api/"):
                self.api += 1
            elif path in ("/robots.txt", "/favicon.ico"):
                self.other += 1
            else:
                self.pages += 1
                self.first = self.first or now
                self.last = now
                self.times.append(now)

    def answering(self, change: int) -> None:
        """A page's answer begins (+1) or ends (-1): how many are in flight at the site."""
        now = time.monotonic()
        with self.lock:
            if self.since:
                self.area += self.active * (now - self.since)
            self.active += change
            self.since = now

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            span = self.last - self.first
            return {
                "pages": self.pages,
                "api_calls": self.api,
                "other": self.other,
                "seconds": span,
                "per_half_second": per_half_second(self.times),
                "in_flight_mean": round(self.area / span, 2) if span > 0 else None,
            }


def per_half_second(times: list[float]) -> list[int]:
    """Pages served in each half second from the first: where a crawl ramps up and tails off."""
    counts: list[int] = []
    for t in times:
        slot = int((t - times[0]) * 2)
        counts.extend([0] * (slot + 1 - len(counts)))
        counts[slot] += 1
    return counts


class GuardedLog:
    """Every answer under ``/guarded/``: (time.monotonic(), client address, path, status)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str, str, int]] = []

    def reset(self) -> None:
        with self.lock, self.guard.lock:
            self.answers.clear()
            self.guard.seen.clear()
            self.guard.banned_until.clear()
            self.guard.answers.clear()

    def add(self, address: str, path: str, status: int, soft: bool = False) -> None:
        with self.lock:
            # a soft block's look-alike is a 200 with none of the page: counted apart
            self.answers.append((time.monotonic(), address, path, SOFT if soft else status))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            answers = list(self.answers)
        addresses: dict[str, dict[str, int]] = {}
        articles: set[str] = set()
        listings: set[str] = set()
        first, last = (answers[0][0], answers[-1][0]) if answers else (0.0, 0.0)
        # per address, its spells of refusals: [first, last refused answer, refusals], in
        # seconds from the first answer, which tell where an address's time went
        refused: dict[str, list[list[float]]] = {}
        ok_since: dict[str, bool] = {}
        per_second: dict[str, list[int]] = {}  # pages got through, each second
        for at, address, path, status in answers:
            counts = addresses.setdefault(address, {})
            counts[str(status)] = counts.get(str(status), 0) + 1
            if status == 200:
                (articles if path.startswith("/guarded/article/") else listings).add(path)
                ok_since[address] = True
                second = int(at - first)
                row = per_second.setdefault(address, [])
                row.extend([0] * (second + 1 - len(row)))
                row[second] += 1
                continue
            spells = refused.setdefault(address, [])
            if ok_since.pop(address, False) or not spells:
                spells.append([round(at - first, 2), round(at - first, 2), 0])
            spells[-1][1] = round(at - first, 2)
            spells[-1][2] += 1
        return {
            "requests": len(answers),
            "addresses": addresses,
            "refused": refused,
            "per_second": per_second,
            "articles_200": len(articles),
            "listings_200": len(listings),
            "first": first,
            "last": last,
            "seconds": last - first,
            "limit": self.guard.limit,
            "window": self.guard.window,
        }


def serve(
    articles: int,
    port: int = 0,
    guard_limit: int | None = None,
    guard_window: float = 1.0,
    latency: tuple[float, float] = (0.0, 0.0),
    guard_block: float = 0.0,
    guard_regime: str = "window",
    guard_status: int = 429,
    guard_per: str = "address",
    pagination: str = "chain",
    guard_listing: int | None = None,
) -> DemoSite:
    """The demo site's own server and pages, with a page counter."""
    guard = (
        Guard(
            guard_limit,
            guard_window,
            guard_block,
            regime=guard_regime,
            ban_status=guard_status,
            key=guard_per,
            listing_limit=guard_listing,
        )
        if guard_limit
        else None
    )
    demo = DemoSite(
        generate(articles), port=port, guard=guard, latency=latency, pagination=pagination
    )
    counter = Counter()
    guarded = GuardedLog(demo.guard)
    base = demo.httpd.RequestHandlerClass

    class Handler(base):  # type: ignore[valid-type, misc]
        log = _NoLog()  # the site's own request log grows with every page; we count instead

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == STATS:
                return self._send(200, json.dumps(counter.snapshot()), "application/json")
            if path == RESET:
                counter.reset()
                guarded.reset()
                return self._send(200, "{}", "application/json")
            if path == GUARDED:
                return self._send(200, json.dumps(guarded.snapshot()), "application/json")
            counter.hit(path)
            counter.answering(+1)
            try:
                super().do_GET()
            finally:
                counter.answering(-1)

        def _send_bytes(self, status: int, data: bytes, *args: Any, **kwargs: Any) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/guarded" or path.startswith("/guarded/"):
                soft = status == 200 and data == SOFT_BLOCK
                guarded.add(self.client_address[0], path, status, soft)
            super()._send_bytes(status, data, *args, **kwargs)

    demo.httpd.RequestHandlerClass = Handler
    return demo


class _NoLog(list[tuple[str, str]]):
    def append(self, entry: tuple[str, str]) -> None:
        pass


@dataclass
class SiteProcess:
    """``with SiteProcess(300) as site: site.url``: the site in a child process."""

    articles: int
    guard_limit: int | None = None  # 429 past this many requests per address and window
    guard_window: float = 1.0
    guard_block: float = 0.0  # seconds an address past the limit is blocked; 0: Retry-After
    guard_regime: str = "window"  # window, fixed or bucket (harvest/demosite/guard.py)
    guard_status: int = 429  # what a blocked client gets: 429, a 403 block page, a 200
    guard_per: str = "address"  # or "cookie": a limit per session
    guard_listing: int | None = None  # listing pages' own limit a window, apart from items
    pagination: str = "chain"  # or "numbered" (harvest demo-site --pagination)
    latency_ms: tuple[float, float] = (0.0, 0.0)  # each answer waits LO-HI ms
    url: str = ""
    process: subprocess.Popen[str] | None = None

    def __enter__(self) -> SiteProcess:
        argv = [sys.executable, "-m", "bench.site", "--articles", str(self.articles)]
        if self.guard_limit:
            argv += ["--guard-limit", str(self.guard_limit)]
            argv += ["--guard-window", str(self.guard_window)]
            argv += ["--guard-block", str(self.guard_block)]
            argv += ["--guard-regime", self.guard_regime, "--guard-status", str(self.guard_status)]
            argv += ["--guard-per", self.guard_per]
            if self.guard_listing:
                argv += ["--guard-listing", str(self.guard_listing)]
        if self.latency_ms[1] > 0:
            argv += ["--latency-ms", *map(str, self.latency_ms)]
        argv += ["--pagination", self.pagination]
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.__exit__()
            raise RuntimeError(f"the site server did not start (it said {self.url!r})")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def reset(self) -> None:
        self._get(RESET)

    def stats(self) -> dict[str, Any]:
        return self._get(STATS)

    def guarded(self) -> dict[str, Any]:
        return self._get(GUARDED)

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            result: dict[str, Any] = json.load(response)
            return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--articles", type=int, default=400)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--guard-limit", type=int, help="requests per address and window")
    parser.add_argument("--guard-window", type=float, default=1.0, help="seconds")
    parser.add_argument("--guard-block", type=float, default=0.0, help="seconds; 0: none")
    parser.add_argument("--guard-regime", default="window", help="window, fixed or bucket")
    parser.add_argument("--guard-status", type=int, default=429, help="a block's status")
    parser.add_argument("--guard-per", default="address", help="address or cookie")
    parser.add_argument("--guard-listing", type=int, help="listing pages' own limit a window")
    parser.add_argument("--pagination", default="chain", help="chain or numbered")
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("LO", "HI"),
        help="each answer waits LO-HI ms",
    )
    args = parser.parse_args()
    latency = (args.latency_ms[0] / 1000, args.latency_ms[1] / 1000)
    guard = (args.guard_limit, args.guard_window)
    demo = serve(
        args.articles,
        args.port,
        *guard,
        latency,
        args.guard_block,
        args.guard_regime,
        args.guard_status,
        args.guard_per,
        args.pagination,
        args.guard_listing,
    )
    demo.start()
    print(demo.url, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin or exits
    demo.stop()


if __name__ == "__main__":
    main()
