"""Random sampling and the uncertainty strategies, and the score Label Studio sorts on.

Each uncertainty is scaled to [0, 1] (1 = the model cannot tell the classes apart), so
that ``score`` can hand Label Studio one comparable number per row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from labeling.strategies.base import check_probs, pool, top
from training.arrays import Floats, Indices


def least_confidence_uncertainty(p: Floats) -> Floats:
    """1 - the top probability, scaled so a uniform row scores 1."""
    k = p.shape[1]
    scores: Floats = (1.0 - p.max(axis=1)) * k / (k - 1)
    return scores


def margin_uncertainty(p: Floats) -> Floats:
    """1 - (top probability - runner-up): 1 when the two best classes tie."""
    two = np.partition(p, -2, axis=1)[:, -2:]
    return 1.0 - (two[:, 1] - two[:, 0])


def entropy_uncertainty(p: Floats) -> Floats:
    """Shannon entropy over log(classes): 1 for a uniform row, 0 for a one-hot row."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    scores: Floats = h / np.log(p.shape[1])
    return scores


MEASURES: dict[str, Callable[[Floats], Floats]] = {
    "least_confidence": least_confidence_uncertainty,
    "margin": margin_uncertainty,
    "entropy": entropy_uncertainty,
}


def score(probs: Floats, measure: str = "least_confidence") -> Floats:
    """One number per row in [0, 1] for Label Studio's prediction ``score``.

    It is 1 - the row's normalised uncertainty under ``measure``: lowest score = most
    uncertain, so sorting the Data Manager by prediction score, ascending, shows first the
    tasks the uncertainty strategies pick first. With the default it is the model's top
    probability rescaled from [1/classes, 1] to [0, 1].
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}; known: {sorted(MEASURES)}")
    return 1.0 - MEASURES[measure](check_probs(f"score/{measure}", probs))


def random_sample(
    probs: Floats | None,
    embeddings: Floats | None,
    n: int,
    rng: np.random.Generator,
    labelled: Indices | None = None,
) -> Indices:
    """``n`` unlabelled rows uniformly at random; the same seed gives the same rows."""
    rows = next((len(a) for a in (probs, embeddings) if a is not None), None)
    if rows is None:
        raise ValueError("strategy 'random' needs probs or embeddings to know how many rows")
    candidates = pool("random", rows, n, labelled)
    return rng.permutation(candidates)[:n]


def _most_uncertain(
    name: str, probs: Floats | None, n: int, labelled: Indices | None, *measures: str
) -> Indices:
    p = check_probs(name, probs)
    return top(pool(name, len(p), n, labelled), *(MEASURES[m](p) for m in measures), n=n)


def least_confidence(
    probs: Floats | None,
    embeddings: Floats | None,
    n: int,
    rng: np.random.Generator,
    labelled: Indices | None = None,
) -> Indices:
    """The ``n`` rows with the lowest top probability; ties to the smaller margin, then index."""
    return _most_uncertain("least_confidence", probs, n, labelled, "least_confidence", "margin")


def margin(
    probs: Floats | None,
    embeddings: Floats | None,
    n: int,
    rng: np.random.Generator,
    labelled: Indices | None = None,
) -> Indices:
    """The ``n`` rows whose two best classes are closest; ties to the higher entropy, then index.

    The entropy breaks ties between rows the margin cannot tell apart (say two classes at
    0.4 each): the row that also spreads its remaining mass wider goes first.
    """
    return _most_uncertain("margin", probs, n, labelled, "margin", "entropy")


def entropy(
    probs: Floats | None,
    embeddings: Floats | None,
    n: int,
    rng: np.random.Generator,
    labelled: Indices | None = None,
) -> Indices:
    """The ``n`` rows with the highest entropy; ties to the smaller margin, then index."""
    return _most_uncertain("entropy", probs, n, labelled, "entropy", "margin")
