"""What every strategy shares: its signature, input checks and the candidate pool."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from training.arrays import Floats, Indices

# Scores closer than this count as tied, so float noise never decides an order.
TIE_DECIMALS = 12


class Strategy(Protocol):
    """Picks ``n`` rows to label next; returns their indices, most useful first.

    ``probs`` (rows x classes) and ``embeddings`` (rows x dims) describe the same rows,
    labelled ones included; ``labelled`` holds the indices of rows already labelled,
    which are never picked (diversity strategies treat them as covered ground).
    """

    def __call__(
        self,
        probs: Floats | None,
        embeddings: Floats | None,
        n: int,
        rng: np.random.Generator,
        labelled: Indices | None = None,
    ) -> Indices: ...


def check_probs(name: str, probs: Floats | None) -> Floats:
    if probs is None:
        raise ValueError(f"strategy {name!r} needs predicted probabilities (probs), got None")
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"strategy {name!r}: probs must be rows x classes (>= 2), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"strategy {name!r}: probs must be finite and non-negative")
    off = np.flatnonzero(np.abs(p.sum(axis=1) - 1.0) > 1e-3)
    if off.size:
        raise ValueError(f"strategy {name!r}: probs row {off[0]} does not sum to 1 (logits?)")
    return p


def check_embeddings(name: str, embeddings: Floats | None) -> Floats:
    if embeddings is None:
        raise ValueError(f"strategy {name!r} needs embeddings, got None")
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"strategy {name!r}: embeddings must be rows x dims, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"strategy {name!r}: embeddings must be finite")
    return x


def pool(name: str, rows: int, n: int, labelled: Indices | None) -> Indices:
    """Indices of the unlabelled rows, after checking ``n`` and ``labelled``."""
    if n < 0:
        raise ValueError(f"strategy {name!r}: n must be >= 0, got {n}")
    mask = np.ones(rows, dtype=bool)
    if labelled is not None:
        done = np.asarray(labelled, dtype=np.int64).ravel()
        if done.size and (done.min() < 0 or done.max() >= rows):
            raise ValueError(f"strategy {name!r}: labelled index out of range 0..{rows - 1}")
        mask[done] = False
    return np.flatnonzero(mask)


def same_rows(name: str, probs: Floats, embeddings: Floats) -> None:
    if len(probs) != len(embeddings):
        raise ValueError(
            f"strategy {name!r}: probs has {len(probs)} rows, embeddings {len(embeddings)}"
        )


def top(candidates: Indices, *keys: Floats, n: int) -> Indices:
    """The ``n`` candidates with the highest keys, compared in order, ties by lower index."""
    cols = [-np.round(k[candidates], TIE_DECIMALS) for k in keys]
    # lexsort sorts by its last key first
    order = np.lexsort([candidates, *reversed(cols)])
    picked: Indices = candidates[order[:n]]
    return picked
