"""The band index: each curated row's LSH band keys and content hash, kept beside
``curated/<source>``, so a batch's dedup looks up its own keys instead of streaming the
table's signatures.

It lives in ``<lake>/lsh/<source>/``: segments, three files each, and ``manifest.json``.
A segment's ``N.keys.npy`` holds its sorted uint64 keys (21 band keys a row with a text,
one key of its content hash), ``N.refs.npy`` the row of each key within the segment, and
``N.rows.arrow`` (Arrow IPC, memory-mapped to read) the rows: content hash, URL, group,
signature and the curated version that added them. The manifest names the segments and
the curated version the index has read up to (its watermark); it is replaced atomically,
so a write killed at any point leaves the index as it was, plus files no manifest names,
which the next write deletes.

The index is a cache of the table, never the truth. ``sync`` reads the commits made
since the watermark back from the table's log (the gate's own commit and any other
writer's), so a curate killed between its curated commit and the index's write is
repaired by the next one. What the log cannot replay (rows deleted, the table
overwritten or recreated, a replayed file vacuumed, the log cleaned up, a manifest
damaged or of other parameters) makes it rebuild from the table. A lookup at a pinned
version sees only the rows added up to it; one before the version a rebuild read is
answered by the table itself (``Deduper`` scans it).

After each write, the newest segments merge while the newer holds at least half the rows
of the one before and the result stays within ``SEGMENT_ROWS``: a lookup binary-searches
a few segments, and a merge's memory is bounded whatever the table's size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from ingestion import deltalog
from ingestion.faults import pause_point
from ingestion.lake import Lake
from ingestion.minhash import SIGNATURE, Keys, NearDuplicates, Signatures

MANIFEST = "manifest.json"
SEGMENT_ROWS = 1 << 19  # a merge holds two segments' keys: about 300 MiB at this size
READ_ROWS = 65_536  # rows read from the table at once when rebuilding
GROUP = "dup_group"
WANTED = ("content_sha256", "url", GROUP, SIGNATURE)  # what the index keeps of a row
ROWS = pa.schema(
    [
        ("content_sha256", pa.string()),
        ("url", pa.string()),
        ("group", pa.string()),
        ("version", pa.int64()),
        (SIGNATURE, pa.binary()),
    ]
)
Refs = NDArray[np.int64]


def exact_keys(hashes: list[str]) -> Keys:
    """One uint64 key per content hash (any string: blake2b of it)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(h.encode(), digest_size=8).digest()) for h in hashes],
        dtype=np.uint64,
    )


def band_salt(bands: int) -> Keys:
    """Mixed into each band's keys, so equal values in two bands are not one key."""
    return np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


@dataclass
class Stored:
    """Rows of the index a lookup found: position ``i`` of the query, and the row."""

    query: Refs  # the query's index of each candidate
    rows: pa.Table  # content_sha256, url, group, version, minhash of each candidate
    order: Refs  # global insertion order of each candidate row (lower: indexed first)


class BandIndex:
    """The band index of ``curated/<source>``; writes (``sync``) under the curate lock."""

    def __init__(self, lake: Lake, source: str, near: NearDuplicates):
        self.lake, self.table = lake, f"curated/{source}"
        self.near = near
        self.dir = Path(lake.root) / "lsh" / source
        self.salt = band_salt(near.bands)

    @staticmethod
    def usable(lake: Lake) -> bool:
        """Segments are memory-mapped: only a lake on a local disk has an index."""
        return "://" not in lake.root

    # --- the manifest

    def manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when absent, damaged or made with other parameters."""
        try:
            found = json.loads((self.dir / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(found, dict) or found.get("near") != asdict(self.near):
            return None
        return found

    def drop(self) -> None:
        """Forgets the index, so the next sync rebuilds it (its files unreadable)."""
        with contextlib.suppress(OSError):
            (self.dir / MANIFEST).unlink()

    def _commit(self, manifest: dict[str, Any]) -> None:
        tmp = self.dir / f"{MANIFEST}.tmp"
        with tmp.open("w") as f:
            json.dump(manifest, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / MANIFEST)
        self._sweep(manifest)

    def _sweep(self, manifest: dict[str, Any]) -> None:
        """Deletes the files no manifest names: merged away, or left by a killed write."""
        keep = {s["name"] for s in manifest["segments"]}
        for f in self._files():
            if f.name != MANIFEST and f.name.split(".")[0] not in keep:
                with contextlib.suppress(OSError):
                    f.unlink()

    # --- keeping it up to date

    def sync(self) -> dict[str, Any] | None:
        """Brings the index up to the table's latest version: replays the commits since its
        watermark, or rebuilds it; returns the manifest (None: no table, no index)."""
        if not self.lake.exists(self.table):
            if self.dir.exists():
                self._commit(self._empty(-1, -1))
            return None
        latest = self.lake.table(self.table).version()
        manifest = self.manifest()
        if manifest is not None and manifest["watermark"] == latest:
            return manifest
        added = None
        if manifest is not None and manifest["watermark"] < latest:
            added = self._replayable(manifest["watermark"], latest)
        self.dir.mkdir(parents=True, exist_ok=True)
        if manifest is None or added is None:
            manifest = self._empty(latest, latest)
            dataset = self.lake.dataset(self.table, self.lake.table(self.table, latest))
            columns = [c for c in WANTED if c in dataset.schema.names]
            parts: Iterator[tuple[int, pa.Table]] = (
                (latest, pa.Table.from_batches([b]))
                for b in self.lake.batches(self.table, dataset, columns, READ_ROWS)
                if b.num_rows
            )
        else:
            parts = ((v, self._read(f)) for v, f in added)
        for version, part in parts:
            self._add(manifest, self._rows(part, version))
        manifest["watermark"] = latest
        self._commit(manifest)
        return manifest

    def _empty(self, watermark: int, base: int) -> dict[str, Any]:
        # new names past every file there: a stale manifest still names the old ones
        taken = [int(f.name[1:7]) for f in self._files() if f.name[1:7].isdigit()]
        return {
            "near": asdict(self.near),
            "watermark": watermark,
            "base": base,
            "segments": [],
            "next": max(taken, default=0),
        }

    def _files(self) -> list[Path]:
        return list(self.dir.iterdir()) if self.dir.exists() else []

    def _replayable(self, since: int, until: int) -> list[tuple[int, str]] | None:
        """The data files commits ``since+1 .. until`` added, with the version of each;
        None when those commits did more than add rows, or cannot be read back."""
        uri = self.lake.uri(self.table)
        added: list[tuple[int, str]] = []
        try:
            for version, actions in deltalog.commits(uri, since + 1, until):
                for action in actions:
                    if "add" in action and action["add"].get("dataChange", True):
                        added.append((version, deltalog.file_uri(uri, action["add"]["path"])))
                    elif "remove" in action and action["remove"].get("dataChange", True):
                        return None  # rows deleted or replaced: what is indexed is wrong
        except FileNotFoundError:
            return None
        if deltalog.missing(uri, {f for _, f in added}):
            return None
        return added

    @staticmethod
    def _read(path: str) -> pa.Table:
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in WANTED if c in names])

    def _rows(self, part: pa.Table, version: int) -> pa.Table:
        n = part.num_rows
        hashes = part["content_sha256"]
        group = part[GROUP] if GROUP in part.column_names else pa.nulls(n, pa.string())
        sig = part[SIGNATURE] if SIGNATURE in part.column_names else pa.nulls(n, pa.binary())
        return pa.table(
            {
                "content_sha256": hashes.cast(pa.string()),
                "url": part["url"].cast(pa.string()),
                "group": pc.coalesce(group.cast(pa.string()), hashes.cast(pa.string())),
                "version": pa.array(np.full(n, version, dtype=np.int64)),
                SIGNATURE: sig.cast(pa.binary()),
            },
            schema=ROWS,
        )

    def _add(self, manifest: dict[str, Any], rows: pa.Table) -> None:
        """Writes ``rows`` as a new segment of ``manifest`` (not committed yet), then merges."""
        if not rows.num_rows:
            return
        sigs, has = self.near.stored(rows[SIGNATURE], self.table)
        keys, refs = self._keys(rows["content_sha256"].to_pylist(), sigs, has)
        segments = manifest["segments"]
        first = segments[-1]["first"] + segments[-1]["rows"] if segments else 0
        name = self._name(manifest)
        self._write(name, keys, refs, [rows])
        segments.append({"name": name, "rows": rows.num_rows, "first": first})
        pause_point("lsh:segment")
        while len(segments) > 1:
            older, newer = segments[-2], segments[-1]
            if 2 * newer["rows"] < older["rows"] or older["rows"] + newer["rows"] > SEGMENT_ROWS:
                break
            segments[-2:] = [self._merge(manifest, older, newer)]

    def _keys(
        self, hashes: list[str], sigs: Signatures, has: NDArray[np.bool_]
    ) -> tuple[Keys, Refs]:
        rows = np.flatnonzero(has)
        bands = self.near.band_keys(sigs[rows]) ^ self.salt
        keys = np.concatenate([exact_keys(hashes), bands.ravel()])
        refs = np.concatenate([np.arange(len(hashes)), np.repeat(rows, self.near.bands)])
        order = np.argsort(keys, kind="stable")
        return keys[order], refs[order]

    def _name(self, manifest: dict[str, Any]) -> str:
        manifest["next"] = int(manifest.get("next", 0)) + 1
        return f"s{manifest['next']:06d}"

    def _write(self, name: str, keys: Keys, refs: Refs, rows: list[pa.Table]) -> None:
        np.save(self.dir / f"{name}.keys.npy", keys)
        np.save(self.dir / f"{name}.refs.npy", refs.astype(np.uint32))
        with pa.ipc.new_file(str(self.dir / f"{name}.rows.arrow"), ROWS) as writer:
            for part in rows:
                writer.write_table(part)

    def _merge(
        self, manifest: dict[str, Any], a: dict[str, Any], b: dict[str, Any]
    ) -> dict[str, Any]:
        ka, ra = self._keys_of(a["name"])
        kb, rb = self._keys_of(b["name"])
        keys = np.concatenate([ka, kb])
        refs = np.concatenate([ra.astype(np.int64), rb.astype(np.int64) + a["rows"]])
        order = np.argsort(keys, kind="stable")  # two sorted runs: a linear merge
        name = self._name(manifest)
        self._write(
            name, keys[order], refs[order], [self._rows_of(a["name"]), self._rows_of(b["name"])]
        )
        return {"name": name, "rows": a["rows"] + b["rows"], "first": a["first"]}

    def _keys_of(self, name: str) -> tuple[Keys, NDArray[np.uint32]]:
        keys = np.load(self.dir / f"{name}.keys.npy", mmap_mode="r")
        refs = np.load(self.dir / f"{name}.refs.npy", mmap_mode="r")
        return keys, refs

    def _rows_of(self, name: str) -> pa.Table:
        source = pa.memory_map(str(self.dir / f"{name}.rows.arrow"))
        return pa.ipc.open_file(source).read_all()

    def _take_rows(self, name: str, refs: Refs) -> pa.Table:
        """Rows ``refs`` of a segment, in that order, from the record batches that hold
        them alone: a take over the whole file's chunks costs with the segment's size."""
        reader = pa.ipc.open_file(pa.memory_map(str(self.dir / f"{name}.rows.arrow")))
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        starts = np.cumsum([0] + [b.num_rows for b in batches])
        order = np.argsort(refs, kind="stable")
        wanted = refs[order]
        at = np.searchsorted(starts, wanted, side="right") - 1
        parts = []
        for b in np.unique(at):
            mine = at == b
            parts.append(batches[b].take(pa.array(wanted[mine] - starts[b])))
        taken = pa.Table.from_batches(parts, schema=reader.schema)
        return taken.take(pa.array(np.argsort(order, kind="stable")))

    # --- lookups

    def lookup(
        self, manifest: dict[str, Any], keys: Keys, query: Refs, version: int | None
    ) -> Stored:
        """The indexed rows sharing a key with the query (``keys[k]`` asked for by query
        row ``query[k]``), as of curated ``version`` (None: the watermark)."""
        order = np.argsort(keys, kind="stable")
        keys, query = keys[order], query[order]
        found_q: list[Refs] = []
        found_rows: list[pa.Table] = []
        found_order: list[Refs] = []
        for seg in manifest["segments"]:
            skeys, srefs = self._keys_of(seg["name"])
            lo = np.searchsorted(skeys, keys, side="left")
            inside = np.flatnonzero(lo < len(skeys))
            hit = inside[skeys[lo[inside]] == keys[inside]]
            if not len(hit):
                continue
            # where each found key's run ends: searched for the few keys found alone
            counts = np.searchsorted(skeys, keys[hit], side="right") - lo[hit]
            starts = np.repeat(lo[hit], counts)
            within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            refs = np.asarray(srefs[starts + within], dtype=np.int64)
            q = np.repeat(query[hit], counts)
            # one row per (query row, stored row), whichever keys they share
            pairs = np.unique(np.stack([q, refs], axis=1), axis=0)
            rows = self._take_rows(seg["name"], pairs[:, 1])
            if version is not None:
                keep = np.asarray(rows["version"].to_numpy()) <= version
                pairs, rows = pairs[keep], rows.filter(pa.array(keep))
            found_q.append(pairs[:, 0])
            found_rows.append(rows)
            found_order.append(pairs[:, 1] + seg["first"])
        if not found_rows:
            empty = np.zeros(0, dtype=np.int64)
            return Stored(empty, ROWS.empty_table(), empty)
        return Stored(
            np.concatenate(found_q), pa.concat_tables(found_rows), np.concatenate(found_order)
        )
