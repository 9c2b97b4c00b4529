"""Duplicates: exact ones by content hash, near ones by MinHash LSH, within a batch and
against what ``curated/<source>`` already holds.

Every survivor gets a ``dup_group``: the ``content_sha256`` of the first row of its group
to be curated, so splits can keep a group on one side. A dropped row is not lost: it comes
back with the reason (``exact_duplicate`` or ``near_duplicate``), the URL of the row it
copies, that row's group and the estimated Jaccard similarity, for the caller to write
down (the gate writes them to ``duplicates/<source>``).

Near duplicates are compared by MinHash (``ingestion/minhash.py``). Each curated row
stores its signature (``minhash``), and the band index beside the table
(``ingestion/lshindex.py``) holds every curated row's band keys and content hash: a batch
looks up its own keys, so its cost follows the batch and its candidates, not the table.
Where there is no index to ask (a lake on an object store, or a version from before the
index's last rebuild), the table is streamed in slices instead, never held in memory. A
candidate counts as a near duplicate only if its estimated Jaccard reaches ``threshold``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ingestion.lake import Lake
from ingestion.lshindex import BandIndex, exact_keys
from ingestion.minhash import SIGNATURE, Keys, Mask, NearDuplicates, Signatures

EXACT, NEAR = "exact_duplicate", "near_duplicate"
GROUP = "dup_group"


@dataclass
class Match:
    url: str
    group: str
    similarity: float


@dataclass
class DedupResult:
    kept: pd.DataFrame  # the survivors, with dup_group and minhash
    dropped: pd.DataFrame  # the rest, with reason, duplicate_of, dup_group and similarity
    exact: int = 0
    near: int = 0


def duplicates_table(source: str) -> str:
    return f"duplicates/{source}"


def keep_dropped(
    lake: Lake,
    source: str,
    result: DedupResult,
    at: datetime,
    metadata: dict[str, Any] | None = None,
) -> int | None:
    """Appends the rows ``result`` dropped to ``duplicates/<source>``, each with its reason
    and ``dropped_at``; returns the new version, or None when none was dropped."""
    if not len(result.dropped):
        return None
    dropped = pa.Table.from_pandas(result.dropped.assign(dropped_at=at), preserve_index=False)
    return lake.append(duplicates_table(source), dropped, metadata)


def shares_a_band(keys: Keys, valid: Mask) -> Mask:
    """Which rows (of those with a signature) have a band key another such row has."""
    shared = np.zeros(len(keys), dtype=bool)
    rows = np.flatnonzero(valid)
    for b in range(keys.shape[1]):
        order = rows[np.argsort(keys[rows, b], kind="stable")]
        sorted_keys = keys[order, b]
        same = sorted_keys[1:] == sorted_keys[:-1]
        shared[order[1:][same]] = True
        shared[order[:-1][same]] = True
    return shared


class Deduper:
    """Drops exact and near duplicates from a batch of rows passed by the gate."""

    def __init__(
        self,
        lake: Lake,
        source: str,
        text_field: str,
        near: NearDuplicates | None = None,
        scan_rows: int = 65_536,
        version: int | None = None,
        index: bool = True,
    ):
        """``version``: compare with the table as it was at that version (-1: before it
        existed), for a batch finished after a kill, whose own rows it may already hold.
        ``index``: look rows up in the band index (False: stream the table); a lookup
        brings the index up to the table first, so a Deduper that uses it writes, under
        the curate lock like every writer of curated."""
        self.lake, self.table = lake, f"curated/{source}"
        self.version = version
        self.text_field = text_field
        self.near = near or NearDuplicates()
        self.scan_rows = scan_rows
        self.index = (
            BandIndex(lake, source, self.near) if index and BandIndex.usable(lake) else None
        )

    def sync_index(self) -> None:
        """Brings the band index up to the table: called right after a commit to curated."""
        if self.index is not None:
            self.index.sync()

    def __call__(self, df: pd.DataFrame) -> DedupResult:
        near = self.near
        hashes = df["content_sha256"].astype(object).tolist()
        urls = df["url"].astype(object).tolist()
        texts = df[self.text_field].astype(object).where(df[self.text_field].notna(), None)
        sigs, valid = near.signatures(texts.tolist())
        keys = near.band_keys(sigs)
        exact_in_table, near_in_table = self._against_table(hashes, sigs, valid, keys)
        # a row that shares no band key with another row of the batch has no candidate in
        # it and is no row's candidate: most rows, kept out of the loop's band lookups
        paired = shares_a_band(keys, valid)

        n = len(df)
        groups: list[str] = list(hashes)
        matches: dict[int, tuple[str, Match]] = {}
        first_of: dict[str, int] = {}
        # rows already kept, by band key: the candidates for rows later in the batch
        kept_by_key: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(near.bands)]
        for i in range(n):
            h = hashes[i]
            if h in exact_in_table:
                matches[i] = (EXACT, exact_in_table[h])
            elif h in first_of:
                j = first_of[h]
                matches[i] = (EXACT, Match(urls[j], groups[j], 1.0))
            elif i in near_in_table:
                matches[i] = (NEAR, near_in_table[i])
            elif paired[i]:
                best = self._best_kept(i, sigs, keys, kept_by_key)
                if best is not None:
                    j, sim = best
                    matches[i] = (NEAR, Match(urls[j], groups[j], sim))
            first_of.setdefault(h, i)
            if i in matches:
                groups[i] = matches[i][1].group
                continue
            if paired[i]:
                for b in range(near.bands):
                    kept_by_key[b][int(keys[i, b])].append(i)

        drop = np.zeros(n, dtype=bool)
        drop[list(matches)] = True
        kept = df[~drop].copy()
        kept[GROUP] = pd.array(
            [g for g, d in zip(groups, drop, strict=True) if not d],
            dtype=pd.ArrowDtype(pa.string()),
        )
        kept[SIGNATURE] = pd.array(
            [
                s.astype("<u4").tobytes() if v else None
                for s, v, d in zip(sigs, valid, drop, strict=True)
                if not d
            ],
            dtype=pd.ArrowDtype(pa.binary()),
        )
        dropped = df[drop].copy()
        order = sorted(matches)
        dropped["reason"] = pd.array(
            [matches[i][0] for i in order], dtype=pd.ArrowDtype(pa.string())
        )
        dropped["duplicate_of"] = pd.array(
            [matches[i][1].url for i in order], dtype=pd.ArrowDtype(pa.string())
        )
        dropped[GROUP] = pd.array(
            [matches[i][1].group for i in order], dtype=pd.ArrowDtype(pa.string())
        )
        dropped["similarity"] = pd.array(
            [round(matches[i][1].similarity, 4) for i in order], dtype=pd.ArrowDtype(pa.float64())
        )
        kinds = [m[0] for m in matches.values()]
        return DedupResult(
            kept=kept,
            dropped=dropped,
            exact=kinds.count(EXACT),
            near=kinds.count(NEAR),
        )

    def _best_kept(
        self,
        i: int,
        sigs: Signatures,
        keys: Keys,
        kept_by_key: list[dict[int, list[int]]],
    ) -> tuple[int, float] | None:
        candidates = {
            j for b in range(self.near.bands) for j in kept_by_key[b].get(int(keys[i, b]), ())
        }
        best: tuple[int, float] | None = None
        for j in sorted(candidates):
            sim = self.near.similarity(sigs[i], sigs[j])
            if sim >= self.near.threshold and (best is None or sim > best[1]):
                best = (j, sim)
        return best

    def _against_table(
        self, hashes: list[str], sigs: Signatures, valid: Mask, keys: Keys
    ) -> tuple[dict[str, Match], dict[int, Match]]:
        """Rows of the batch the table already holds: exact ones by hash, near ones by the
        batch's row."""
        if self.index is not None and self._exists():
            for attempt in range(2):
                manifest = self.index.sync()
                if manifest is None or (
                    self.version is not None and self.version < manifest["base"]
                ):
                    break
                try:
                    return self._from_index(manifest, hashes, sigs, valid, keys)
                except (OSError, ValueError, pa.ArrowException):
                    if attempt:
                        raise
                    self.index.drop()  # a segment damaged outside a write: read it again
        return self._scan_table(set(hashes), sigs, valid, keys)

    def _from_index(
        self,
        manifest: dict[str, Any],
        hashes: list[str],
        sigs: Signatures,
        valid: Mask,
        keys: Keys,
    ) -> tuple[dict[str, Match], dict[int, Match]]:
        assert self.index is not None
        near = self.near
        rows = np.flatnonzero(valid)
        asked = np.concatenate([exact_keys(hashes), (keys[rows] ^ self.index.salt).ravel()])
        by = np.concatenate([np.arange(len(hashes)), np.repeat(rows, near.bands)])
        found = self.index.lookup(manifest, asked, by, self.version)
        # the first row indexed wins a tie, as the first row scanned does
        first = np.argsort(found.order, kind="stable")
        query = found.query[first]
        stored = found.rows.take(pa.array(first))
        urls, groups = stored["url"].to_pylist(), stored["group"].to_pylist()
        exact: dict[str, Match] = {}
        for k, (i, h) in enumerate(zip(query, stored["content_sha256"].to_pylist(), strict=True)):
            if h == hashes[i] and h not in exact:
                exact[h] = Match(urls[k], groups[k], 1.0)
        others, has = near.stored(stored[SIGNATURE], self.table)
        pairs = np.flatnonzero(has & valid[query])
        same = np.count_nonzero(sigs[query[pairs]] == others[pairs], axis=1)
        matches: dict[int, Match] = {}
        for k, equal in zip(pairs, same, strict=True):
            i, sim = int(query[k]), float(equal) / near.num_perm
            if sim >= near.threshold and (i not in matches or sim > matches[i].similarity):
                matches[i] = Match(urls[k], groups[k], sim)
        return exact, matches

    def _scan_table(
        self, hashes: set[str], sigs: Signatures, valid: Mask, keys: Keys
    ) -> tuple[dict[str, Match], dict[int, Match]]:
        """The same answer as the index's, by streaming the table's signatures."""
        near = self.near
        exact: dict[str, Match] = {}
        found: dict[int, Match] = {}
        if not self._exists():
            return exact, found
        # the batch's rows by band key, as sorted arrays: a stored row's candidates are a
        # binary search away, without a Python dict entry per row and band
        rows = np.flatnonzero(valid)
        order = [rows[np.argsort(keys[rows, b], kind="stable")] for b in range(near.bands)]
        band_sorted = [keys[order[b], b] for b in range(near.bands)]
        for part in self._scan():
            part_hashes = part["content_sha256"].to_pylist()
            part_urls = part["url"].to_pylist()
            part_groups = (
                part[GROUP].to_pylist() if GROUP in part.column_names else [None] * part.num_rows
            )
            groups = [g or h for g, h in zip(part_groups, part_hashes, strict=True)]
            for h, u, g in zip(part_hashes, part_urls, groups, strict=True):
                if h in hashes and h not in exact:
                    exact[h] = Match(u, g, 1.0)
            if SIGNATURE not in part.column_names or not valid.any():
                continue
            stored, has = near.stored(part[SIGNATURE], self.table)
            stored_keys = near.band_keys(stored)
            lo = np.empty_like(stored_keys, dtype=np.int64)
            hi = np.empty_like(stored_keys, dtype=np.int64)
            for b in range(near.bands):
                lo[:, b] = np.searchsorted(band_sorted[b], stored_keys[:, b], side="left")
                hi[:, b] = np.searchsorted(band_sorted[b], stored_keys[:, b], side="right")
            hit = (hi > lo).any(axis=1)
            for r in np.flatnonzero(hit & has):
                batch_rows = {
                    int(i) for b in range(near.bands) for i in order[b][lo[r, b] : hi[r, b]]
                }
                for i in batch_rows:
                    sim = near.similarity(sigs[i], stored[r])
                    if sim >= near.threshold and (i not in found or sim > found[i].similarity):
                        found[i] = Match(part_urls[r], groups[r], sim)
        return exact, found

    def _exists(self) -> bool:
        return (self.version is None or self.version >= 0) and self.lake.exists(self.table)

    def _scan(self) -> Iterator[pa.Table]:
        if not self._exists():
            return
        dataset = self.lake.dataset(self.table, self.lake.table(self.table, self.version))
        columns = [
            c for c in ("content_sha256", "url", GROUP, SIGNATURE) if c in dataset.schema.names
        ]
        for batch in self.lake.batches(self.table, dataset, columns, self.scan_rows):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])
