"""MinHash signatures of texts and their LSH band keys: what near-duplicate detection
compares, in the batch (``ingestion/dedup.py``) and in the band index
(``ingestion/lshindex.py``).

Texts are compared on their character 5-grams, after lower-casing and dropping
punctuation, so a changed title mark or a few edited words keep most shingles. A
signature is 128 uint32 (stored as 512 little-endian bytes in the ``minhash`` column);
LSH over 21 bands of 6 rows makes a candidate of a pair with a Jaccard of 0.5 28% of the
time, of 0.7 93%, of 0.8 99.9%.
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from ingestion.compiled import compiled
from ingestion.lake import LakeError

SIGNATURE = "minhash"
_WORDS = re.compile(r"[^\w]+")
SIGNATURE_SLICE = 2_000  # stored signatures gathered at once
Signatures = NDArray[np.uint32]  # (texts, num_perm) MinHash values
Mask = NDArray[np.bool_]  # per text: whether it has a signature
Keys = NDArray[np.uint64]  # (texts, bands) band hashes


# ASCII letters, digits and underscore (what \w matches there) kept, every other byte a space
_ASCII_WORDS = bytes(
    c if chr(c).isascii() and (chr(c).isalnum() or c == ord("_")) else 32 for c in range(256)
)


def normal(text: str) -> bytes:
    """The text shingles are taken from: lower-cased, punctuation as spaces, UTF-8."""
    if text.isascii():  # most text: byte translation, several times faster than the regex
        return b" ".join(text.encode("ascii").lower().translate(_ASCII_WORDS).split())
    return _WORDS.sub(" ", text.lower()).strip(" ").encode("utf-8")


def shingles(text: str, k: int) -> list[bytes]:
    """Character k-grams of the text, lower-cased and with punctuation as spaces."""
    data = normal(text)
    if not data:
        return []
    return list({data[i : i + k] for i in range(max(1, len(data) - k + 1))})


def _crc_table() -> NDArray[np.uint32]:
    table: NDArray[Any] = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1)
    return table.astype(np.uint32)


CRC_TABLE = _crc_table()


@compiled
def _signatures(
    buffer: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    k: int,
    crc_table: NDArray[np.uint32],
    a: NDArray[np.uint32],
    b: NDArray[np.uint32],
    out: NDArray[np.uint32],
    valid: NDArray[np.bool_],
) -> None:  # pragma: no cover (compiled)
    """Text ``t`` is ``buffer[offsets[t]:offsets[t + 1]]``: for each k-byte window (a text
    shorter than k: the whole text), zlib.crc32 mixed by MurmurHash3's finalizer, then
    ``a * h + b`` modulo 2^32 for every permutation, keeping each permutation's minimum.
    uint32 all along, so the wrap-around is the modulo."""
    hashes = np.empty(1024, dtype=np.uint32)
    for t in range(len(offsets) - 1):
        lo, size = offsets[t], offsets[t + 1] - offsets[t]
        if size == 0:
            continue
        valid[t] = True
        width = min(size, k)
        count = size - width + 1
        if hashes.shape[0] < count:
            hashes = np.empty(2 * count, dtype=np.uint32)
        for s in range(count):
            crc = np.uint32(0xFFFFFFFF)
            for j in range(width):
                byte = np.uint32(buffer[lo + s + j])
                crc = crc_table[(crc ^ byte) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
            h = crc ^ np.uint32(0xFFFFFFFF)
            h = h ^ (h >> np.uint32(16))
            h = np.uint32(h * np.uint32(0x85EBCA6B))
            h = h ^ (h >> np.uint32(13))
            h = np.uint32(h * np.uint32(0xC2B2AE35))
            hashes[s] = h ^ (h >> np.uint32(16))
        # a permutation at a time over all windows: a loop the compiler vectorises
        for p in range(a.shape[0]):
            ap, bp, least = a[p], b[p], np.uint32(0xFFFFFFFF)
            for s in range(count):
                least = min(least, np.uint32(np.uint32(ap * hashes[s]) + bp))
            out[t, p] = least


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
        """(n, num_perm) uint32 signatures, and which texts had any (None or blank: not).

        The values datasketch's ``MinHash.bulk`` gives for the texts' shingles hashed with
        crc32 (its affine32 scheme: the crc32 mixed by MurmurHash3's finalizer, then
        ``a * h + b`` modulo 2^32 for each permutation), computed by one compiled pass over
        the batch's normalised bytes. A shingle seen twice in a text changes no minimum,
        so windows need no dedup.
        """
        data = [normal(t) if isinstance(t, str) else b"" for t in texts]
        offsets = np.zeros(len(data) + 1, dtype=np.int64)
        np.cumsum([len(d) for d in data], out=offsets[1:])
        buffer = np.frombuffer(b"".join(data), dtype=np.uint8)
        sigs = np.zeros((len(texts), self.num_perm), dtype=np.uint32)
        valid = np.zeros(len(texts), dtype=bool)
        a, b = self._permutations()
        _signatures(buffer, offsets, self.shingle, CRC_TABLE, a, b, sigs, valid)
        return sigs, valid

    @functools.cache  # noqa: B019 (a frozen dataclass: one cache entry per parameter set)
    def _permutations(self) -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
        from datasketch import MinHash  # half a second to import, for these two arrays

        a, b = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=zlib.crc32).permutations
        return np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)

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

    def stored(self, column: pa.ChunkedArray | pa.Array, table: str) -> tuple[Signatures, Mask]:
        """Stored signatures as (n, num_perm) uint32, and which rows have one.

        Any binary type is accepted: Delta has no fixed-size binary, so signatures written
        as ``fixed_size_binary`` read back as plain ``binary``; a value of another length
        than ``num_perm * 4`` bytes counts as no signature.
        """
        width = self.num_perm * 4
        kind = column.type
        if not (
            pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_binary_view(kind)
            or pa.types.is_fixed_size_binary(kind)
        ):
            raise LakeError(
                f"{table}: column {SIGNATURE} is {kind}, not binary of {width} bytes a row"
            )
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        arr = column.cast(pa.large_binary())
        n = len(arr)
        _, offsets_buf, data_buf = arr.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
        has = pc.is_valid(arr).to_numpy(zero_copy_only=False) & (np.diff(offsets) == width)
        sigs = np.zeros((n, self.num_perm), dtype=np.uint32)
        if has.any() and data_buf is not None:
            data = np.frombuffer(data_buf, dtype=np.uint8)
            rows = np.flatnonzero(has)
            # a byte index per signature byte takes 8 bytes each: gather a block at a time
            for start in range(0, len(rows), SIGNATURE_SLICE):
                block = rows[start : start + SIGNATURE_SLICE]
                at = offsets[block, None] + np.arange(width)
                sigs[block] = data[at].view("<u4").reshape(-1, self.num_perm)
        return sigs, has
