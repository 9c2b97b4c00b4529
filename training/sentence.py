"""all-MiniLM-L6-v2 sentence embeddings as a scikit-learn step, for the linear models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from training.arrays import Floats


class SentenceVectors(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Unit-length sentence embeddings of texts, with nothing to fit; pickled with the
    model, it holds no weights (the encoder loads on first use)."""

    def __init__(self, max_length: int = 128):
        self.max_length = max_length

    def fit(self, texts: Iterable[str], y: Any = None) -> SentenceVectors:
        return self

    def transform(self, texts: Iterable[str]) -> Floats:
        from training import embedding

        out = embedding.embed(list(texts), max_length=self.max_length)
        return np.asarray(out.numpy(), dtype=np.float64)
