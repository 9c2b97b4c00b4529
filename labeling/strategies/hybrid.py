"""Uncertainty and diversity together, for batches."""

from __future__ import annotations

import numpy as np

from labeling.strategies.base import check_embeddings, check_probs, pool, same_rows, top
from labeling.strategies.diversity import representatives
from labeling.strategies.uncertainty import MEASURES
from training.arrays import Floats, Indices

POOL_FACTOR = 20


def hybrid(
    probs: Floats | None,
    embeddings: Floats | None,
    n: int,
    rng: np.random.Generator,
    labelled: Indices | None = None,
) -> Indices:
    """The ``n`` · POOL_FACTOR rows of smallest margin, split by k-means into ``n``
    clusters; from each, the row nearest its centre. Most uncertain first.

    Diverse mini-batch active learning (Zhdanov, 2019): a batch of pure uncertainty picks
    near-duplicates from one confusing region, and a farthest-point walk over the
    uncertain rows picks their outliers; one typical row of each uncertain region makes
    each label teach something new.
    """
    p = check_probs("hybrid", probs)
    x = check_embeddings("hybrid", embeddings)
    same_rows("hybrid", p, x)
    candidates = pool("hybrid", len(p), n, labelled)
    uncertain = top(candidates, MEASURES["margin"](p), MEASURES["entropy"](p), n=n * POOL_FACTOR)
    k = min(n, len(uncertain))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    # positions in ``uncertain`` sorted ascending: its order is most uncertain first
    return uncertain[np.sort(representatives(x[uncertain], k, rng))]
