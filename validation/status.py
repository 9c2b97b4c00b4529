"""Where each source stands: its last crawl and curate run, held batches and why, quarantine."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingestion.lake import Lake
from ingestion.runs import CRAWL_STAGE, CURATE_STAGE, runs_of
from validation import batch, quarantine


def source_status(lake: Lake, source: str) -> dict[str, Any]:
    holds = batch.held(lake, source)
    latest_hold = holds[0] if holds else None
    good = batch.last_good(lake, source)
    reviews = quarantine.reviews(lake, source)
    counts = quarantine.counts(lake, source)
    return {
        "source": source,
        "last_crawl": _last(lake, CRAWL_STAGE, source),
        "last_curate": _last(lake, CURATE_STAGE, source),
        "last_good_batch": _batch(good) if good else None,
        "held": _batch(latest_hold) | {"tries": len(holds)} if latest_hold else None,
        "quarantine": {"rows": counts["rows"], "by_expectation": counts["by_expectation"]},
        "last_review": reviews[-1] if reviews else None,
    }


def describe(status: dict[str, Any]) -> list[str]:
    """The same, as lines for a person."""
    lines = [f"{status['source']}:"]
    crawl, curate = status["last_crawl"], status["last_curate"]
    lines.append(
        f"  last crawl: {_when(crawl['at'])} {crawl.get('state')}, {crawl.get('rows', '?')} rows"
        if crawl
        else "  last crawl: never"
    )
    lines.append(
        f"  last curate: {_when(curate['at'])}, {curate.get('curated')} curated, "
        f"{curate.get('quarantined')} quarantined"
        if curate
        else "  last curate: never"
    )
    held = status["held"]
    if held:
        lines.append(
            f"  HELD: raw versions {held['raw_from']} to {held['raw_to']} ({held['rows']} rows, "
            f"{held['tries']} tries); release with `harvest curate {status['source']} "
            f"--accept-batch --reason ...`"
        )
        lines += [f"    - {r}" for r in held["reasons"]]
    q = status["quarantine"]
    lines.append(f"  quarantine: {q['rows']} rows")
    lines += [f"    - {name}: {n}" for name, n in q["by_expectation"].items()]
    return lines


def _when(at: datetime | str) -> str:
    # the status as read from the lake holds times; as JSON (the service's summary), text
    when = datetime.fromisoformat(at) if isinstance(at, str) else at
    return f"{when:%Y-%m-%d %H:%M}"


def _last(lake: Lake, stage: str, source: str) -> dict[str, Any] | None:
    mine = runs_of(lake, stage, source)
    if not mine:
        return None
    keep = (
        "at",
        "crawl_id",
        "state",
        "rows",
        "raw_version",
        "rows_in",
        "curated",
        "quarantined",
        "duplicates_dropped",
        "near_duplicates_dropped",
        "batch_status",
        "report",
    )
    return {k: mine[-1][k] for k in keep if k in mine[-1]}


def _batch(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("at", "raw_from", "raw_to", "rows", "status", "reasons", "by", "note")
    return {k: row[k] for k in keep}
