"""The simple baseline every run trains beside its model: TF-IDF and logistic regression.

Word 1-2 grams with sublinear term frequency, L2-regularised multinomial logistic
regression (scikit-learn). It sees the same training rows as the neural model, so the
report shows what the neural model adds over a linear bag of words.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.arrays import Floats


@dataclass
class Baseline:
    classes: list[str]
    vectorizer: Any
    model: Any
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, texts: list[str]) -> Floats:
        """Probabilities in ``classes`` order; 0 for a class absent from the training rows."""
        out = np.zeros((len(texts), len(self.classes)))
        if not texts:
            return out
        got = self.model.predict_proba(self.vectorizer.transform(texts))
        columns = [self.classes.index(c) for c in self.model.classes_]
        out[:, columns] = got
        return out


def fit_baseline(
    texts: list[str], labels: list[str], classes: list[str], seed: int = 0, c: float = 10.0
) -> Baseline:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    params = {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 1, "C": c}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x = vectorizer.fit_transform(texts)
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    model.fit(x, labels)
    return Baseline(list(classes), vectorizer, model, time.perf_counter() - started, params)
