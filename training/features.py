"""Hashed word n-grams: no vocabulary to build or ship, the same ids in every process."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import torch

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def ngram_ids(text: str, buckets: int, ngrams: int = 2) -> list[int]:
    words = TOKEN.findall(text.lower())
    grams = list(words)
    for n in range(2, ngrams + 1):
        grams += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    # bucket 0 is padding, so an empty text still has one id
    return [1 + zlib.crc32(g.encode()) % (buckets - 1) for g in grams] or [0]


def pack(id_lists: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat ids and offsets, the input ``nn.EmbeddingBag`` takes."""
    ids: list[int] = []
    offsets: list[int] = []
    for row in id_lists:
        offsets.append(len(ids))
        ids.extend(row)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def encode(texts: list[str], buckets: int, ngrams: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return pack([ngram_ids(text, buckets, ngrams) for text in texts])
