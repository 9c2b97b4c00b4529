"""The account of a crawl: what it fetched, and every page it gave up on, by reason.

Built from the crawl's stats at its end, so a worker's account and a merged one read the
same. A page given up on is one the crawl wanted and did not get: a download that failed
after its retries, a body it could not use, a ban that outlasted its retries, an address
it refused, an HTTP error. Pages left out by policy (robots.txt, other domains, unchanged
since the last crawl) are counted apart and are not failures.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

# stats prefix -> how the account names the reason
GIVE_UP = {
    "harvest/failed/": "",
    "harvest/skipped/": "",
    "harvest/refused/": "",
    "httperror/response_ignored_status_count/": "http_",
}


def account(stats: dict[str, Any]) -> dict[str, Any]:
    given_up: dict[str, int] = {}
    for key, value in stats.items():
        for prefix, label in GIVE_UP.items():
            if key.startswith(prefix):
                reason = label + key[len(prefix) :]
                given_up[reason] = given_up.get(reason, 0) + int(value)
    if stats.get("harvest/proxy/gave_up"):
        given_up["banned"] = int(stats["harvest/proxy/gave_up"])
    exits: dict[str, dict[str, int]] = defaultdict(dict)
    for key, value in stats.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[:2] == ["harvest", "proxy"]:
            exits[parts[3]][parts[2]] = int(value)
    return {
        "scheduled": int(stats.get("scheduler/enqueued", 0)),
        "fetched": int(stats.get("response_received_count", 0)),
        "items": int(stats.get("item_scraped_count", 0)),
        "rows": int(stats.get("harvest/rows_committed", 0)),
        "retries": int(stats.get("retry/count", 0)) + int(stats.get("harvest/proxy/retries", 0)),
        "banned_responses": sum(e.get("bans", 0) for e in exits.values()),
        "robots_disallowed": int(stats.get("robotstxt/forbidden", 0)),
        "offsite": int(stats.get("offsite/filtered", 0)),
        "unchanged": int(stats.get("harvest/incremental/unchanged", 0)),
        "given_up": dict(sorted(given_up.items())),
        "given_up_total": sum(given_up.values()),
        "exits": dict(sorted(exits.items())),
    }


def describe(acc: dict[str, Any]) -> list[str]:
    """The account as lines a person reads at the end of a crawl."""
    lines = [
        f"fetched {acc['fetched']} of {acc['scheduled']} scheduled requests, "
        f"{acc['items']} items, {acc['rows']} rows; {acc['retries']} retries, "
        f"{acc['banned_responses']} banned responses, {acc['robots_disallowed']} disallowed "
        f"by robots.txt, {acc['unchanged']} unchanged"
    ]
    if acc["given_up_total"]:
        reasons = ", ".join(f"{n} {reason}" for reason, n in acc["given_up"].items())
        lines.append(f"gave up on {acc['given_up_total']} pages: {reasons}")
    else:
        lines.append("gave up on no page")
    for name, figures in acc["exits"].items():
        shown = ", ".join(f"{k} {v}" for k, v in sorted(figures.items()))
        lines.append(f"exit {name}: {shown}")
    return lines
