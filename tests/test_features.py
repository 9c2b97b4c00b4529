"""What the labelling model reads: TF-IDF n-grams alone, or with sentence embeddings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harvest import stages
from harvest.config import Config
from labeling import features, model
from training.embedding import ENCODER, EmbeddingCache

# the classes are told apart by meaning; the test sentences share no word with the training
# ones, so n-grams alone have nothing to go on
TRAIN = {
    "Sports": [
        "the team won the championship final",
        "the striker scored twice in the match",
        "the coach praised his players after the season opener",
        "a record crowd watched the tennis tournament",
    ],
    "Business": [
        "shares fell sharply on wall street",
        "the bank raised interest rates again",
        "quarterly profits beat analyst forecasts",
        "the company announced a merger with its rival",
    ],
}
TEST = {
    "Sports": [
        "goalkeeper saves penalty as club clinches league title",
        "olympic sprinter sets fastest time ever",
    ],
    "Business": [
        "investors dump stocks amid recession fears",
        "retailer reports lower revenue and cuts jobs",
    ],
}


def flat(data: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    return [t for ts in data.values() for t in ts], [c for c, ts in data.items() for _ in ts]


@pytest.fixture(autouse=True)
def memory_cache() -> Iterator[None]:
    features.use_cache(None)
    yield
    features.use_cache(None)


def test_sentence_features_carry_meaning_that_words_alone_miss() -> None:
    texts, labels = flat(TRAIN)
    test_texts, test_labels = flat(TEST)
    both = model.fit(texts, labels)
    assert both.features == "tfidf+minilm"  # the default
    assert both.predict(test_texts) == test_labels
    words = model.fit(texts, labels, features="tfidf")
    assert words.features == "tfidf"
    # no test word was seen in training: n-grams give every row the same probabilities
    probs = words.predict_proba(test_texts)
    assert np.allclose(probs, probs[0])


def test_vectors_are_the_sentence_embeddings_the_model_reads() -> None:
    texts, labels = flat(TRAIN)
    both = model.fit(texts, labels)
    v = both.vectors(texts[:3])
    assert v is not None and v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert model.fit(texts, labels, features="tfidf").vectors(texts) is None


def test_saved_model_keeps_its_features_and_predictions(tmp_path: Path) -> None:
    texts, labels = flat(TRAIN)
    test_texts, _ = flat(TEST)
    fitted = model.fit(texts, labels)
    fitted.save(tmp_path)
    loaded = model.load(tmp_path)
    assert loaded is not None and loaded.features == "tfidf+minilm"
    assert np.allclose(loaded.predict_proba(test_texts), fitted.predict_proba(test_texts))


def test_unknown_features_name_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown labelling model features 'bert'; known: tfidf"):
        model.fit(["a b", "c d"], ["x", "y"], features="bert")


def test_each_text_is_encoded_once_and_kept_beside_the_models(tmp_path: Path) -> None:
    config = Config(lake=str(tmp_path / "lake"))
    stages.keep_sentence_vectors(config)
    texts, labels = flat(TRAIN)
    fitted = model.fit(texts, labels)
    kept = Path(config.models_dir) / "sentence-vectors" / f"{ENCODER}.npz"
    assert kept.exists()
    assert len(EmbeddingCache(kept.parent).vectors) == len(set(texts))
    # a new process reads them from the file: a row that is there is not encoded again
    cache = EmbeddingCache(kept.parent)
    key = EmbeddingCache.key(texts[0], 128)
    cache.vectors[key] = np.zeros_like(cache.vectors[key])
    cache.save()
    features.use_cache(None)
    stages.keep_sentence_vectors(Config(lake=str(tmp_path / "lake")))
    from training import embedding

    embedding._FILE_CACHES.clear()
    v = fitted.vectors(texts[:2])
    assert v is not None
    assert not v[0].any() and v[1].any()
