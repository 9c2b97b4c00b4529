"""A fastText-style classifier: mean of hashed n-gram embeddings, then a linear layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    classes: tuple[str, ...]
    buckets: int = 1 << 18
    dim: int = 64
    ngrams: int = 2


class NgramClassifier(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.EmbeddingBag(config.buckets, config.dim, mode="mean")
        self.head = nn.Linear(config.dim, len(config.classes))
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids, offsets))

    def save(self, path: str) -> None:
        torch.save({"config": asdict(self.config), "state": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str, device: str = "cpu") -> NgramClassifier:
        blob = torch.load(path, map_location=device, weights_only=True)
        config = blob["config"]
        model = cls(ModelConfig(**{**config, "classes": tuple(config["classes"])}))
        model.load_state_dict(blob["state"])
        return model.to(device)
