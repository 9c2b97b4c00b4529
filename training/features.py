"""Hashed word n-grams: no vocabulary to build or ship, the same ids in every process."""

from __future__ import annotations

import re
import zlib

import torch

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def ngram_ids(text: str, buckets: int, ngrams: int = 2) -> list[int]:
    words = TOKEN.findall(text.lower())
    grams = list(words)
    for n in range(2, ngrams + 1):
        grams += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    # bucket 0 is padding, so an empty text still has one id
    return [1 + zlib.crc32(g.encode()) % (buckets - 1) for g in grams] or [0]


def encode(texts: list[str], buckets: int, ngrams: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat ids and offsets, the input ``nn.EmbeddingBag`` takes."""
    ids: list[int] = []
    offsets: list[int] = []
    for text in texts:
        offsets.append(len(ids))
        ids.extend(ngram_ids(text, buckets, ngrams))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)
