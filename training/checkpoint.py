"""Training checkpoints: everything a resumed run needs to continue as if never stopped.

``last.pt`` holds the state after the latest epoch (weights, optimiser, schedule, loss
scaler, every random generator, history, early-stopping counters); ``best.pt`` the
weights of the best epoch so far. ``best.pt`` is written first, so a stop between the
two writes leaves a ``last.pt`` one epoch older, and rerunning that epoch writes the same
best again. Each file is replaced atomically and loads with ``weights_only``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAST = "last.pt"
BEST = "best.pt"


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "shuffle": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write(path: Path, blob: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def save(folder: str | Path, last: dict[str, Any], best_state: dict[str, Any] | None) -> Path:
    folder = Path(folder)
    if best_state is not None:
        _write(folder / BEST, {"epoch": last["best_epoch"], "state": best_state})
    _write(folder / LAST, last)
    return folder / LAST


def load(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(last, best weights)``, or None where no checkpoint was written."""
    folder = Path(folder)
    if not (folder / LAST).exists():
        return None
    last = torch.load(folder / LAST, map_location="cpu", weights_only=True)
    best = torch.load(folder / BEST, map_location="cpu", weights_only=True)
    return last, best["state"]
