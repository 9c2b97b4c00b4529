"""Fits a classifier on the train split, keeping the epoch that scores best on validation."""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from training.evaluate import macro_f1
from training.features import encode
from training.model import ModelConfig, NgramClassifier

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {requested} asked for, but torch sees no CUDA device")
    return requested


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.05
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"


@dataclass
class FitResult:
    model: NgramClassifier
    best_epoch: int
    best_val_f1: float
    history: list[dict[str, float]]
    device: str


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict(model: NgramClassifier, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Class probabilities, one row per text."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            ids, offsets = encode(
                texts[start : start + batch_size], model.config.buckets, model.config.ngrams
            )
            logits = model(ids.to(device), offsets.to(device))
            out.append(torch.softmax(logits, dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.config.classes)))


def fit(
    train: tuple[list[str], list[str]],
    validation: tuple[list[str], list[str]],
    classes: list[str],
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    seed_everything(config.seed)
    device = pick_device(config.device)
    model = NgramClassifier(ModelConfig(classes=tuple(classes))).to(device)
    index = {c: i for i, c in enumerate(classes)}
    texts, labels = train
    y = torch.tensor([index[label] for label in labels], dtype=torch.long)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(config.seed)
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(texts), generator=gen).tolist()
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            ids, offsets = encode(
                [texts[i] for i in batch], model.config.buckets, model.config.ngrams
            )
            optimiser.zero_grad()
            loss = loss_fn(model(ids.to(device), offsets.to(device)), y[batch].to(device))
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        probs = predict(model, validation[0])
        val_f1 = macro_f1(
            [index[label] for label in validation[1]], probs.argmax(axis=1).tolist(), len(classes)
        )
        row = {"epoch": epoch, "train_loss": total / max(1, len(texts)), "val_macro_f1": val_f1}
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if val_f1 > best[0]:
            best = (val_f1, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return FitResult(model, best[1], best[0], history, device)
