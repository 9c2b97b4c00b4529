"""Uncertainty and diversity together, for batches."""

from __future__ import annotations

import numpy as np

from labeling.strategies.base import check_embeddings, check_probs, pool, same_rows, top
from labeling.strategies.diversity import greedy_kcenter
from labeling.strategies.uncertainty import MEASURES

POOL_FACTOR = 10


def hybrid(
    probs: np.ndarray | None,
    embeddings: np.ndarray | None,
    n: int,
    rng: np.random.Generator,
    labelled: np.ndarray | None = None,
) -> np.ndarray:
    """The ``n`` · POOL_FACTOR rows of smallest margin, then k-center greedy among them.

    A batch of pure uncertainty picks near-duplicates from one confusing region; spreading
    the batch over the uncertain rows makes each label teach something new. The walk
    starts at the most uncertain row, and keeps away from rows already labelled.
    """
    p = check_probs("hybrid", probs)
    x = check_embeddings("hybrid", embeddings)
    same_rows("hybrid", p, x)
    candidates = pool("hybrid", len(p), n, labelled)
    uncertain = top(candidates, MEASURES["margin"](p), MEASURES["entropy"](p), n=n * POOL_FACTOR)
    covered = np.setdiff1d(np.arange(len(x)), candidates)
    return greedy_kcenter(x, uncertain, covered, n, first=0)
