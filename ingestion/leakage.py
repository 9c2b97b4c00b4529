"""Duplicates between the rows of a dataset: which rows belong together, and which pairs
sit on different sides of a split (a leak: the model is tested on what it trained on).

Exact duplicates share a content hash (``row_id``) or a normalised text (lower-cased,
punctuation as spaces, whitespace collapsed). Near duplicates have MinHash signatures
(``ingestion.dedup``) whose estimated Jaccard similarity reaches the threshold.
Candidates come from LSH over 25 bands of 5 rows, finer than the gate's 21 of 6: a pair at
a Jaccard of 0.7 is a candidate 99% of the time, at 0.8 99.96%, where comparing every
pair would cost the square of the row count.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from ingestion.errors import CheckFailedError
from ingestion.minhash import SIGNATURE, Mask, NearDuplicates, Signatures

EXACT, NEAR = "exact", "near"
BANDS, ROWS = 25, 5
PAIR_SLICE = 200_000  # candidate pairs compared at once
EXAMPLES = 5  # leaks named in an error message
_WORDS = re.compile(r"[^\w]+")


class LeakError(CheckFailedError):
    """A dataset version would put copies of a row on two sides of its split."""

    def __init__(self, name: str, report: LeakReport):
        self.report = report
        super().__init__(f"dataset {name!r} not written: {report.describe()}")


def normalised(text: str | None) -> str:
    if not text:
        return ""
    return " ".join(_WORDS.sub(" ", text.lower()).split())


@dataclass(frozen=True)
class Pair:
    a: int  # row positions, a < b
    b: int
    kind: str  # exact or near
    similarity: float


def checker(threshold: float) -> NearDuplicates:
    """The gate's signatures (same permutations and shingles), with finer bands."""
    return replace(NearDuplicates(threshold=threshold), bands=BANDS, rows=ROWS)


def signatures(
    texts: list[str | None], stored: list[bytes | None] | None, near: NearDuplicates
) -> tuple[Signatures, Mask]:
    """Signatures of ``texts``: the gate's stored ones where they are whole, the others
    computed (the gate's parameters give the same values either way)."""
    width = near.num_perm * 4
    sigs = np.zeros((len(texts), near.num_perm), dtype=np.uint32)
    valid = np.zeros(len(texts), dtype=bool)
    todo = []
    for i, raw in enumerate(stored or [None] * len(texts)):
        if raw is not None and len(raw) == width:
            sigs[i] = np.frombuffer(raw, dtype="<u4")
            valid[i] = True
        else:
            todo.append(i)
    if todo:
        computed, has = near.signatures([texts[i] for i in todo])
        sigs[todo] = computed
        valid[todo] = has
    return sigs, valid


def duplicate_pairs(
    row_ids: list[str],
    texts: list[str | None],
    sigs: Signatures,
    valid: Mask,
    near: NearDuplicates,
) -> list[Pair]:
    """Every pair of rows that are exact or near duplicates, sorted."""
    exact: set[tuple[int, int]] = set()
    for key in (row_ids, [_text_key(t) for t in texts]):
        buckets: dict[Any, list[int]] = defaultdict(list)
        for i, k in enumerate(key):
            if k is not None:
                buckets[k].append(i)
        for rows in buckets.values():
            exact.update((a, b) for j, a in enumerate(rows) for b in rows[j + 1 :])
    pairs = [Pair(a, b, EXACT, 1.0) for a, b in sorted(exact)]
    found = _near_pairs(sigs, valid, near)
    pairs += [Pair(a, b, NEAR, s) for a, b, s in found if (a, b) not in exact]
    return sorted(pairs, key=lambda p: (p.a, p.b))


def _text_key(text: str | None) -> bytes | None:
    norm = normalised(text)
    return hashlib.sha1(norm.encode()).digest() if norm else None


def _near_pairs(
    sigs: Signatures, valid: Mask, near: NearDuplicates
) -> list[tuple[int, int, float]]:
    rows = np.flatnonzero(valid)
    if len(rows) < 2:
        return []
    keys = near.band_keys(sigs[rows])
    found: list[NDArray[np.int64]] = []
    for band in range(near.bands):
        order = np.argsort(keys[:, band], kind="stable")
        k = keys[order, band]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        ends = np.r_[starts[1:], len(k)]
        for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
            members = np.sort(rows[order[s:e]])
            lo, hi = np.triu_indices(len(members), 1)
            found.append(members[lo].astype(np.int64) * len(sigs) + members[hi])
    if not found:
        return []
    codes = np.unique(np.concatenate(found))
    out: list[tuple[int, int, float]] = []
    for start in range(0, len(codes), PAIR_SLICE):
        part = codes[start : start + PAIR_SLICE]
        a, b = part // len(sigs), part % len(sigs)
        sim = np.count_nonzero(sigs[a] == sigs[b], axis=1) / near.num_perm
        keep = sim >= near.threshold
        out += zip(a[keep].tolist(), b[keep].tolist(), sim[keep].tolist(), strict=True)
    return out


def linked_groups(groups: list[Any], pairs: list[Pair]) -> list[int]:
    """For each row, the first row of its group, where a group joins rows with equal
    ``groups`` values and the rows of every pair (transitively)."""
    parent = list(range(len(groups)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[Any, int] = {}
    for i, g in enumerate(groups):
        join(first.setdefault(g, i), i)
    for p in pairs:
        join(p.a, p.b)
    return [root(i) for i in range(len(groups))]


@dataclass
class Leak:
    kind: str
    similarity: float
    a: dict[str, Any]  # row_id, source, url, split of each row
    b: dict[str, Any]


@dataclass
class LeakReport:
    leaks: list[Leak]
    threshold: float

    @property
    def exact(self) -> int:
        return sum(1 for leak in self.leaks if leak.kind == EXACT)

    @property
    def near(self) -> int:
        return sum(1 for leak in self.leaks if leak.kind == NEAR)

    @property
    def ok(self) -> bool:
        return not self.leaks

    def as_json(self) -> dict[str, Any]:
        return {"exact": self.exact, "near": self.near, "near_threshold": self.threshold}

    def describe(self) -> str:
        if self.ok:
            return "no exact or near duplicates across splits"
        lines = [
            f"{len(self.leaks)} pair(s) of rows are duplicates across splits ({self.exact} "
            f"exact, {self.near} near with MinHash similarity >= {self.threshold}), e.g.:"
        ]
        for leak in self.leaks[:EXAMPLES]:
            a, b = leak.a, leak.b
            lines.append(
                f"  {a['split']} {a['url']} ({a['source']}) and {b['split']} {b['url']} "
                f"({b['source']}): {leak.kind}, similarity {leak.similarity:.2f}"
            )
        return "\n".join(lines)


def leaks(rows: pa.Table, pairs: list[Pair], threshold: float) -> LeakReport:
    """The pairs whose rows sit in different splits of ``rows``."""
    split = rows["split"].to_pylist()
    cross = [p for p in pairs if split[p.a] != split[p.b]]
    if not cross:
        return LeakReport([], threshold)
    columns = ("row_id", "source", "url", "split")
    values = {c: rows[c].to_pylist() for c in columns}

    def row(i: int) -> dict[str, Any]:
        return {c: values[c][i] for c in columns}

    return LeakReport(
        [Leak(p.kind, round(p.similarity, 4), row(p.a), row(p.b)) for p in cross], threshold
    )


def check_leaks(
    rows: pa.Table,
    threshold: float = 0.7,
    stored: list[bytes | None] | None = None,
) -> LeakReport:
    """The leak check on a dataset table (``row_id``, ``source``, ``url``, ``text``,
    ``split``), from stored signatures where given (the gate's ``minhash`` column)."""
    near = checker(threshold)
    texts = rows["text"].to_pylist()
    if stored is None and SIGNATURE in rows.column_names:
        stored = rows[SIGNATURE].to_pylist()
    sigs, valid = signatures(texts, stored, near)
    pairs = duplicate_pairs(rows["row_id"].to_pylist(), texts, sigs, valid, near)
    return leaks(rows, pairs, threshold)
