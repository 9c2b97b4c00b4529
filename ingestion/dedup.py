"""Duplicates: exact ones by content hash, near ones by MinHash LSH, within a batch and
against what ``curated/<source>`` already holds.

Every survivor gets a ``dup_group``: the ``content_sha256`` of the first row of its group
to be curated, so splits can keep a group on one side. A dropped row is not lost: it comes
back with the reason (``exact_duplicate`` or ``near_duplicate``), the URL of the row it
copies, that row's group and the estimated Jaccard similarity, for the caller to write
down (the gate writes them to ``duplicates/<source>``).

Near duplicates are compared on their text's character 5-grams, after lower-casing and
dropping punctuation, so a changed title mark or a few edited words keep most shingles.
Each curated row stores its signature (``minhash``: 128 little-endian uint32, 512 bytes),
so a later batch is compared against the table by streaming it in slices, never by
holding it in memory. LSH over 21 bands of 6 rows makes a candidate of a pair with a
Jaccard of 0.5 28% of the time, of 0.7 93%, of 0.8 99.9%; a candidate counts as a near
duplicate only if its estimated Jaccard reaches ``threshold``.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from datasketch import MinHash
from numpy.typing import NDArray

from ingestion.lake import Lake, LakeError

EXACT, NEAR = "exact_duplicate", "near_duplicate"
GROUP, SIGNATURE = "dup_group", "minhash"
_WORDS = re.compile(r"[^\w]+")
SIGNATURE_SLICE = 2_000  # texts shingled at once
Signatures = NDArray[np.uint32]  # (texts, num_perm) MinHash values
Mask = NDArray[np.bool_]  # per text: whether it has a signature
Keys = NDArray[np.uint64]  # (texts, bands) band hashes


def shingles(text: str, k: int) -> list[bytes]:
    """Character k-grams of the text, lower-cased and with punctuation as spaces."""
    text = " ".join(_WORDS.sub(" ", text.lower()).split())
    if not text:
        return []
    data = text.encode("utf-8")
    return list({data[i : i + k] for i in range(max(1, len(data) - k + 1))})


@dataclass(frozen=True)
class NearDuplicates:
    """How near is a near duplicate: MinHash and LSH parameters, fixed for a table's life
    (signatures made with others cannot be compared)."""

    threshold: float = 0.7
    num_perm: int = 128
    bands: int = 21
    rows: int = 6
    shingle: int = 5
    seed: int = 1

    def signatures(self, texts: list[str | None]) -> tuple[Signatures, Mask]:
        """(n, num_perm) uint32 signatures, and which texts had any (None or blank: not)."""
        valid = np.zeros(len(texts), dtype=bool)
        sigs = np.zeros((len(texts), self.num_perm), dtype=np.uint32)
        # a slice at a time: a text's shingles take some forty times its size in memory
        for start in range(0, len(texts), SIGNATURE_SLICE):
            part = texts[start : start + SIGNATURE_SLICE]
            grams = [shingles(t, self.shingle) if isinstance(t, str) else [] for t in part]
            has = np.array([bool(g) for g in grams], dtype=bool)
            todo = [g for g in grams if g]
            if todo:
                # crc32: stable across processes (Python's hash() is not), and twice as
                # fast as datasketch's sha1
                hashes = MinHash.bulk(
                    todo, num_perm=self.num_perm, seed=self.seed, hashfunc=zlib.crc32
                )
                block = sigs[start : start + len(part)]
                block[has] = np.vstack([m.hashvalues for m in hashes]).astype(np.uint32)
            valid[start : start + len(part)] = has
        return sigs, valid

    def band_keys(self, sigs: Signatures) -> Keys:
        """(n, bands) uint64: one key per band, equal when the band's rows are equal."""
        n = sigs.shape[0]
        keys = np.zeros((n, self.bands), dtype=np.uint64)
        prime = np.uint64(0x100000001B3)
        for b in range(self.bands):
            k: Keys = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
            for j in range(b * self.rows, (b + 1) * self.rows):
                k = (k ^ sigs[:, j].astype(np.uint64)) * prime
            keys[:, b] = k
        return keys

    def similarity(self, a: Signatures, b: Signatures) -> float:
        return float(np.count_nonzero(a == b)) / self.num_perm


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
    ):
        """``version``: compare with the table as it was at that version (-1: before it
        existed), for a batch finished after a kill, whose own rows it may already hold."""
        self.lake, self.table = lake, f"curated/{source}"
        self.version = version
        self.text_field = text_field
        self.near = near or NearDuplicates()
        self.scan_rows = scan_rows

    def __call__(self, df: pd.DataFrame) -> DedupResult:
        near = self.near
        hashes = df["content_sha256"].astype(object).tolist()
        urls = df["url"].astype(object).tolist()
        texts = df[self.text_field].astype(object).where(df[self.text_field].notna(), None)
        sigs, valid = near.signatures(texts.tolist())
        keys = near.band_keys(sigs)
        exact_in_table, near_in_table = self._against_table(set(hashes), sigs, valid, keys)

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
            elif valid[i]:
                best = self._best_kept(i, sigs, keys, kept_by_key)
                if best is not None:
                    j, sim = best
                    matches[i] = (NEAR, Match(urls[j], groups[j], sim))
            first_of.setdefault(h, i)
            if i in matches:
                groups[i] = matches[i][1].group
                continue
            if valid[i]:
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
        self, hashes: set[str], sigs: Signatures, valid: Mask, keys: Keys
    ) -> tuple[dict[str, Match], dict[int, Match]]:
        """Rows of the batch the table already holds: exact ones by hash, near ones by index."""
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
            stored, has = self._stored(part[SIGNATURE])
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

    def _stored(self, column: pa.ChunkedArray) -> tuple[Signatures, Mask]:
        """Stored signatures as (n, num_perm) uint32, and which rows have one.

        Any binary type is accepted: Delta has no fixed-size binary, so signatures written
        as ``fixed_size_binary`` read back as plain ``binary``; a value of another length
        than ``num_perm * 4`` bytes counts as no signature.
        """
        width = self.near.num_perm * 4
        kind = column.type
        if not (
            pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_binary_view(kind)
            or pa.types.is_fixed_size_binary(kind)
        ):
            raise LakeError(
                f"{self.table}: column {SIGNATURE} is {kind}, not binary of {width} bytes a row"
            )
        arr = column.combine_chunks().cast(pa.large_binary())
        n = len(arr)
        _, offsets_buf, data_buf = arr.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
        has = pc.is_valid(arr).to_numpy(zero_copy_only=False) & (np.diff(offsets) == width)
        sigs = np.zeros((n, self.near.num_perm), dtype=np.uint32)
        if has.any() and data_buf is not None:
            data = np.frombuffer(data_buf, dtype=np.uint8)
            rows = np.flatnonzero(has)
            # a byte index per signature byte takes 8 bytes each: gather a block at a time
            for start in range(0, len(rows), SIGNATURE_SLICE):
                block = rows[start : start + SIGNATURE_SLICE]
                at = offsets[block, None] + np.arange(width)
                sigs[block] = data[at].view("<u4").reshape(-1, self.near.num_perm)
        return sigs, has
