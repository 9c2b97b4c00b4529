"""The in-memory embedding cache of a long-running process stays bounded."""

from __future__ import annotations

import numpy as np
import pytest

from training import embedding


def test_an_in_memory_cache_lets_the_least_recent_vectors_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedding, "MEMORY_VECTORS", 3)
    cache = embedding.EmbeddingCache()
    first = embedding.embed(["one text", "two texts"], cache=cache).numpy()
    later = embedding.embed(["three", "four", "one text"], cache=cache).numpy()
    assert len(cache.vectors) == 3  # "two texts", met least recently, went
    assert embedding.EmbeddingCache.key("two texts", 128) not in cache.vectors
    assert np.allclose(later[2], first[0], atol=1e-5)  # a text kept is looked up, not lost
    again = embedding.embed(["two texts"], cache=cache).numpy()  # encoded again
    assert np.allclose(again[0], first[1], atol=1e-5) and len(cache.vectors) == 3
