"""Diversity over embeddings: k-center greedy, and k-means representatives.

Distances are Euclidean; on unit-length sentence embeddings that orders pairs the same
way as cosine distance.
"""

from __future__ import annotations

import numpy as np

from labeling.strategies.base import check_embeddings, pool
from training.arrays import Floats, Indices

CHUNK = 1024  # centres compared at once, to bound a rows x centres distance block
KMEANS_ITERATIONS = 100
KMEANS_RESTARTS = 3


def sq_distances(x: Floats, centres: Floats) -> Floats:
    """Squared Euclidean distances, rows of ``x`` x rows of ``centres``."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    out: Floats = np.maximum(d, 0.0)  # the expansion can dip below zero by rounding
    return out


def greedy_kcenter(
    x: Floats, candidates: Indices, covered: Indices, n: int, first: int | None
) -> Indices:
    """Picks, ``n`` times, the candidate farthest from everything covered or picked so far.

    ``covered`` are rows already labelled; with none, the walk starts at ``first``
    (a position in ``candidates``). Ties go to the earlier candidate.
    """
    xs = x[candidates]
    nearest = np.full(len(candidates), np.inf)
    for start in range(0, covered.size, CHUNK):
        block = x[covered[start : start + CHUNK]]
        nearest = np.minimum(nearest, sq_distances(xs, block).min(axis=1))
    picked: list[int] = []
    for _ in range(min(n, len(candidates))):
        i = first if not picked and covered.size == 0 and first is not None else nearest.argmax()
        picked.append(int(i))
        nearest = np.minimum(nearest, sq_distances(xs, xs[i : i + 1])[:, 0])
        nearest[i] = -np.inf  # never twice, even among duplicates
    return candidates[np.asarray(picked, dtype=np.int64)]


def kcenter(
    probs: Floats | None,
    embeddings: Floats | None,
    n: int,
    rng: np.random.Generator,
    labelled: Indices | None = None,
) -> Indices:
    """k-center greedy: each pick the unlabelled row farthest from the labelled and picked.

    It covers the embedding space evenly, outliers included; the first pick is random
    when nothing is labelled yet.
    """
    x = check_embeddings("kcenter", embeddings)
    candidates = pool("kcenter", len(x), n, labelled)
    covered = np.setdiff1d(np.arange(len(x)), candidates)
    first = int(rng.integers(len(candidates))) if candidates.size else None
    return greedy_kcenter(x, candidates, covered, n, first)


def kmeans(x: Floats, k: int, rng: np.random.Generator) -> tuple[Floats, Indices]:
    """Lloyd's k-means, the best of KMEANS_RESTARTS greedy k-means++ starts; returns
    (centres, cluster of each row).

    One plain k-means++ start put two centres in one of four well-separated clusters for
    a fifth of seeds, and Lloyd's steps never move a centre out of such a start. Greedy
    seeding (the candidate that lowers the spread most, as scikit-learn does) and a
    few restarts kept by the lowest inertia make that rare enough not to be seen.
    """
    best: tuple[float, Floats, Indices] | None = None
    for _ in range(KMEANS_RESTARTS):
        centres, assign = lloyd(x, greedy_seeds(x, k, rng))
        inertia = float(sq_distances(x, centres)[np.arange(len(x)), assign].sum())
        # a relative margin, so that rounding alone never decides between equal starts
        if best is None or inertia < best[0] * (1 - 1e-9):
            best = (inertia, centres, assign)
    assert best is not None
    return best[1], best[2]


def greedy_seeds(x: Floats, k: int, rng: np.random.Generator) -> Floats:
    """k-means++ where each step draws 2 + ln k candidates by squared distance and keeps
    the one that leaves the smallest total squared distance to the centres."""
    trials = 2 + int(np.log(k))
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(len(x))]
    d2 = sq_distances(x, centres[:1])[:, 0]
    for j in range(1, k):
        total = d2.sum()
        p = d2 / total if total > 0 else None
        candidates = rng.choice(len(x), size=trials, p=p)
        after = np.minimum(d2[None, :], sq_distances(x[candidates], x))
        best = int(after.sum(axis=1).argmin())
        centres[j] = x[candidates[best]]
        d2 = after[best]
    return centres


def lloyd(x: Floats, centres: Floats) -> tuple[Floats, Indices]:
    """Lloyd's iterations from ``centres`` until no row changes cluster."""
    k = len(centres)
    assign = np.full(len(x), -1)
    for _ in range(KMEANS_ITERATIONS):
        d = sq_distances(x, centres)
        new = d.argmin(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        sizes = np.bincount(assign, minlength=k)
        for j in np.flatnonzero(sizes == 0):
            # an empty cluster restarts on the row its neighbours fit worst
            far = d[np.arange(len(x)), assign].argmax()
            sums[j], sizes[j] = x[far], 1
            d[far, assign[far]] = 0.0
        centres = sums / sizes[:, None]
    return centres, assign


def coldstart(
    probs: Floats | None,
    embeddings: Floats | None,
    n: int,
    rng: np.random.Generator,
    labelled: Indices | None = None,
) -> Indices:
    """For before any model exists: k-means with k = n, the row nearest each centre.

    One representative per cluster of the unlabelled rows, biggest cluster first, so the
    first labels cover the common kinds of row before the rare ones.
    """
    x = check_embeddings("coldstart", embeddings)
    candidates = pool("coldstart", len(x), n, labelled)
    k = min(n, len(candidates))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    return candidates[representatives(x[candidates], k, rng)]


def representatives(x: Floats, k: int, rng: np.random.Generator) -> Indices:
    """Positions of ``k`` rows of ``x``, one per k-means cluster, the row nearest its
    centre, biggest cluster first."""
    centres, _ = kmeans(x, k, rng)
    d = sq_distances(x, centres)
    assign = d.argmin(axis=1)
    sizes = np.bincount(assign, minlength=k)
    taken = np.zeros(len(x), dtype=bool)
    picked = []
    for j in np.lexsort((np.arange(k), -sizes)):
        # a cluster left empty by a duplicate centre takes the nearest row still free
        members = np.flatnonzero((assign == j) & ~taken)
        if members.size == 0:
            members = np.flatnonzero(~taken)
        i = members[d[members, j].argmin()]
        taken[i] = True
        picked.append(i)
    return np.asarray(picked, dtype=np.int64)
