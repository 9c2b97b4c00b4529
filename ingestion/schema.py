"""Provenance columns every raw row carries, and the row hash."""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from ingestion import canonical

PROVENANCE = pa.schema(
    [
        ("source", pa.string()),
        ("url", pa.string()),
        ("crawl_id", pa.string()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("http_status", pa.int32()),
        ("content_sha256", pa.string()),
        # the page's validators, for conditional requests when it is crawled again
        ("etag", pa.string()),
        ("last_modified", pa.string()),
    ]
)
PROVENANCE_COLUMNS = tuple(PROVENANCE.names)
# what the stages add to a row after the crawl: the gate's columns and dedup's
STAGE_COLUMNS = ("curated_at", "quarantined_at", "failed_expectations", "dup_group", "minhash")
# the lake's own columns, as against what a site published
LAKE_COLUMNS = frozenset(PROVENANCE_COLUMNS + STAGE_COLUMNS)


def content_sha256(fields: dict[str, Any]) -> str:
    """Hash of the extracted content alone, so one article under two URLs hashes alike:
    of ``json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)``."""
    return hashlib.sha256(canonical.dumps(fields).encode("utf-8")).hexdigest()
