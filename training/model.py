"""The models a run can train, and the inputs each makes from texts.

Every model turns texts into an ``Inputs`` once (hashed n-grams, cached sentence
embeddings or token ids), so an epoch only slices tensors; ``forward`` takes what
``Inputs.batch`` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import nn

from training.features import ngram_ids, pack


class Inputs(Protocol):
    def __len__(self) -> int: ...

    def batch(
        self, index: Sequence[int], device: torch.device | str
    ) -> tuple[torch.Tensor, ...]: ...


class BagInputs:
    """Each text as its list of hashed n-gram ids."""

    def __init__(self, rows: list[list[int]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: Sequence[int], device: torch.device | str) -> tuple[torch.Tensor, ...]:
        ids, offsets = pack([self.rows[i] for i in index])
        return ids.to(device), offsets.to(device)


class VectorInputs:
    """One fixed vector a text, such as a frozen encoder's sentence embedding."""

    def __init__(self, vectors: torch.Tensor):
        self.vectors = vectors

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def batch(self, index: Sequence[int], device: torch.device | str) -> tuple[torch.Tensor, ...]:
        return (self.vectors[torch.as_tensor(index, dtype=torch.long)].to(device),)


class TextClassifier(nn.Module):
    kind = ""
    classes: tuple[str, ...]
    threads: int | None = None  # CPU threads a served batch is scored on; None: torch's own

    def inputs(self, texts: list[str]) -> Inputs:
        raise NotImplementedError

    def save(self, path: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class ModelConfig:
    classes: tuple[str, ...]
    buckets: int = 1 << 18
    dim: int = 64
    ngrams: int = 2


class NgramClassifier(TextClassifier):
    """fastText-style: mean of hashed n-gram embeddings, then a linear layer."""

    kind = "ngram"
    # one lookup and one product: for the few dozen texts of a served batch, a team's
    # fork and join cost more than they save, and its idle worker spins on a core the
    # service needs (on 2 cores, 32 one-text clients got about a third more answers)
    threads = 1

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.classes = config.classes
        self.embedding = nn.EmbeddingBag(config.buckets, config.dim, mode="mean")
        self.head = nn.Linear(config.dim, len(config.classes))
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.embedding(ids, offsets))
        return logits

    def inputs(self, texts: list[str]) -> Inputs:
        return BagInputs([ngram_ids(t, self.config.buckets, self.config.ngrams) for t in texts])

    def save(self, path: str) -> None:
        torch.save(
            {"kind": self.kind, "config": asdict(self.config), "state": self.state_dict()}, path
        )

    @classmethod
    def from_blob(cls, blob: dict[str, Any]) -> NgramClassifier:
        config = blob["config"]
        model = cls(ModelConfig(**{**config, "classes": tuple(config["classes"])}))
        model.load_state_dict(blob["state"])
        return model

    @classmethod
    def load(cls, path: str, device: str = "cpu") -> NgramClassifier:
        blob = torch.load(path, map_location=device, weights_only=True)
        return cls.from_blob(blob).to(device)


def load_model(path: str, device: str = "cpu") -> TextClassifier:
    """Any model ``save`` wrote, by the kind recorded in the file."""
    blob = torch.load(path, map_location=device, weights_only=True)
    if blob.get("kind", "ngram") == "ngram":
        return NgramClassifier.from_blob(blob).to(device)
    from training.embedding import EmbeddingClassifier

    return EmbeddingClassifier.from_blob(blob).to(device)


def search_space(trial: Any, prefix: str) -> dict[str, Any]:
    """What ``harvest tune`` searches for the n-gram model."""
    return {
        "lr": trial.suggest_float(f"{prefix}lr", 0.01, 1.0, log=True),
        "dim": trial.suggest_categorical(f"{prefix}dim", [32, 64, 128]),
        "ngrams": trial.suggest_int(f"{prefix}ngrams", 1, 3),
        "batch_size": trial.suggest_categorical(f"{prefix}batch_size", [16, 32, 64]),
    }
