"""The account of a crawl: what it fetched, and every page it gave up on, by reason.

Built from the crawl's stats at its end, so a worker's account and a merged one read the
same. A page given up on is one the crawl wanted and did not get: a download that failed
after its retries, a body it could not use, a ban that outlasted its retries, an address
it refused, an HTTP error. Pages left out by policy (robots.txt, other domains, unchanged
since the last crawl) are counted apart and are not failures.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from scrapy.exceptions import IgnoreRequest


class GaveUp(IgnoreRequest):
    """A page the crawl wanted and stopped trying to get; ``reason`` names why.

    Raised where the page is dropped, which also counts it, so the spider's errback can
    tell it from pages left out by policy (robots.txt, other sites).
    """

    def __init__(self, reason: str, message: str, transient: bool = True):
        super().__init__(message)
        self.reason = reason
        # worth another try later, for a listing page; False when waiting has run out
        self.transient = transient


BROKEN_CHAIN = "harvest/broken_chain/"  # + the URL of a listing page given up on
# + the URL of a suspected block kept as it came after its retries (spiders/middlewares/suspect.py)
SUSPECT_KEPT = "harvest/suspect/kept/"
# + the type of the exception an item page's parse: hook raised (spiders/hooks.py)
HOOK_ERROR = "harvest/hook/error/"
SHOWN = 10  # pages named on an account line; the JSON account names them all
FRACTIONAL = ("rate_per_s", "window_seconds")  # exit figures that are not counts
# stats prefix -> how the account names the reason
GIVE_UP = {
    "harvest/failed/": "",
    "harvest/skipped/": "",
    "harvest/refused/": "",
    "httperror/response_ignored_status_count/": "http_",
}


@dataclass(frozen=True)
class CrawlAccount:
    """What a crawl fetched and every page it gave up on; ``to_dict`` is its JSON form."""

    scheduled: int
    fetched: int
    items: int
    rows: int
    retries: int
    throttled_responses: int
    banned_responses: int
    robots_disallowed: int
    offsite: int
    unchanged: int
    given_up: dict[str, int]  # reason -> pages
    given_up_total: int
    # listing pages given up on, with about how many pages behind each were never seen
    broken_chains: dict[str, int]
    # 200 pages lacking what their pattern's pages had, each time one came back so
    suspected_blocks: int
    # those that never came back whole: kept as they came, and counted as given up
    suspects_kept: list[str]
    # proxy or pace exit -> its figures (bans, throttled, rate_per_s, ...)
    exits: dict[str, dict[str, float]]
    # ended by the watchdog after this many seconds without progress (0: it was not)
    stalled_for: int
    # requests still in flight when a stop ran out of time and was forced
    forced_stop: int
    # item pages whose parse: hook raised, by the exception's type (kept with their
    # selector fields)
    hook_errors: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def account(stats: dict[str, Any]) -> CrawlAccount:
    given_up: dict[str, int] = {}
    for key, value in stats.items():
        for prefix, label in GIVE_UP.items():
            if key.startswith(prefix):
                reason = label + key[len(prefix) :]
                given_up[reason] = given_up.get(reason, 0) + int(value)
    if stats.get("harvest/proxy/gave_up"):
        given_up["banned"] = given_up.get("banned", 0) + int(stats["harvest/proxy/gave_up"])
    exits: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in stats.items():
        parts = key.split("/", 3)
        if len(parts) == 4 and parts[0] == "harvest" and parts[1] in ("proxy", "pace"):
            exits[parts[3]][parts[2]] = value if parts[2] in FRACTIONAL else int(value)
    throttled = sum(int(e.get("throttled", 0)) for e in exits.values())
    broken = {
        key[len(BROKEN_CHAIN) :]: int(value)
        for key, value in stats.items()
        if key.startswith(BROKEN_CHAIN)
    }
    return CrawlAccount(
        scheduled=int(stats.get("scheduler/enqueued", 0)),
        fetched=int(stats.get("response_received_count", 0)),
        items=int(stats.get("item_scraped_count", 0)),
        rows=int(stats.get("harvest/rows_committed", 0)),
        retries=int(stats.get("retry/count", 0))
        + int(stats.get("harvest/proxy/retries", 0))
        + int(stats.get("harvest/listing/retries", 0))
        + int(stats.get("harvest/suspect/retries", 0))
        + int(stats.get("harvest/pace/ban_retries", 0))
        + throttled,
        throttled_responses=throttled,
        banned_responses=sum(int(e.get("bans", 0)) for e in exits.values()),
        robots_disallowed=int(stats.get("robotstxt/forbidden", 0)),
        offsite=int(stats.get("offsite/filtered", 0)),
        unchanged=int(stats.get("harvest/incremental/unchanged", 0)),
        given_up=dict(sorted(given_up.items())),
        given_up_total=sum(given_up.values()),
        broken_chains=dict(sorted(broken.items())),
        suspected_blocks=int(stats.get("harvest/suspect/blocks", 0)),
        suspects_kept=sorted(k[len(SUSPECT_KEPT) :] for k in stats if k.startswith(SUSPECT_KEPT)),
        exits=dict(sorted(exits.items())),
        stalled_for=int(stats.get("harvest/stalled_for", 0)),
        forced_stop=int(stats.get("harvest/forced_stop", 0)),
        hook_errors={
            k[len(HOOK_ERROR) :]: int(v)
            for k, v in sorted(stats.items())
            if k.startswith(HOOK_ERROR)
        },
    )


def describe(acc: CrawlAccount) -> list[str]:
    """The account as lines a person reads at the end of a crawl."""
    lines = [
        f"fetched {acc.fetched} of {acc.scheduled} scheduled requests, "
        f"{acc.items} items, {acc.rows} rows; {acc.retries} retries, "
        f"{acc.throttled_responses} throttled and {acc.banned_responses} banned "
        f"responses, {acc.robots_disallowed} disallowed "
        f"by robots.txt, {acc.unchanged} unchanged"
    ]
    if acc.given_up_total:
        reasons = ", ".join(f"{n} {reason}" for reason, n in acc.given_up.items())
        lines.append(f"gave up on {acc.given_up_total} pages: {reasons}")
    else:
        lines.append("gave up on no page")
    for url, behind in acc.broken_chains.items():
        lines.append(
            f"broken chain: listing page {url} lost, at least about {behind} pages behind it "
            "never seen"
        )
    if acc.suspected_blocks:
        kept = acc.suspects_kept
        outcome = (
            f"{len(kept)} pages still did after their retries and were kept as they came "
            "(an item page goes to the gate): "
            + ", ".join(kept[:SHOWN])
            + (f" and {len(kept) - SHOWN} more" if len(kept) > SHOWN else "")
            if kept
            else "each page came back whole when sent again"
        )
        lines.append(
            f"suspected blocks: {acc.suspected_blocks} responses lacked what their "
            f"pattern's pages had; {outcome}"
        )
    if acc.stalled_for:
        lines.append(f"stalled: no response, error or item for {acc.stalled_for} s; ended")
    if acc.forced_stop:
        lines.append(
            f"stop forced with {acc.forced_stop} request(s) still in flight: their pages "
            "are fetched again when the next crawl resumes this one"
        )
    if acc.hook_errors:
        errors = ", ".join(f"{n} {kind}" for kind, n in acc.hook_errors.items())
        lines.append(
            f"parse hook failed on {sum(acc.hook_errors.values())} item pages ({errors}); "
            "each kept its selector fields"
        )
    for name, figures in acc.exits.items():
        shown = ", ".join(f"{k} {v}" for k, v in sorted(figures.items()))
        lines.append(f"exit {name}: {shown}")
    return lines
