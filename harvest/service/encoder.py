"""The prediction log's drift features, in a child process at the lowest priority.

Each logged text's share of out-of-vocabulary tokens and, for a sample, its MiniLM
vector's distance to the training centroid. Computed in the service's own process,
tokenizing each text held its GIL a quarter as long as scoring the text with the n-gram
model, and the requests waited for it; encoding took the cores the requests are scored
on, so that on 2 cores a lone n-gram request waited about 3 ms longer with the log on
than off. A child at nice 19 gets only the CPU time scoring leaves. One child serves the
whole process; it starts on the first flush and ends with the process. It keeps the
profiles it was sent, so a profile crosses over once, not with every flush.

A model built on MiniLM has already computed the vectors of the texts it scored: those
are taken from the process's cache. Encoding them again in the child, beside a MiniLM
forward pass on the same 2 cores, slowed a lone request by several milliseconds.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import numpy as np

from training.arrays import Floats
from training.embedding import DIM, already_embedded
from training.profile import Profile, encode_fresh

DEADLINE = 120.0  # seconds a flush's features may take, the child's start included
KEPT = 4  # profiles the child keeps: the versions a service is likely to serve at once
T = TypeVar("T")
_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()
_held: dict[Any, Profile] = {}  # in the child: the profiles sent to it


def _lowest_priority() -> None:
    os.nice(19)


def features(
    key: Any, profile: Profile, texts: list[str], embed: int, seed: int
) -> dict[str, Floats]:
    """``profile.features(texts, embed, seed)``, worked out in the child; ``key`` names
    the profile (a model version) there."""
    chosen = profile.chosen(len(texts), embed, seed)
    known = already_embedded([texts[i] for i in chosen])
    found = _in_child(_features, key, None, texts, chosen, known)
    if found is None:  # a child that has not met this profile yet
        found = _in_child(_features, key, profile, texts, chosen, known)
    assert found is not None
    return found


def _features(
    key: Any,
    profile: Profile | None,
    texts: list[str],
    chosen: list[int],
    known: list[Floats | None],
) -> dict[str, Floats] | None:
    if profile is not None:
        _held.pop(key, None)
        _held[key] = profile
        while len(_held) > KEPT:
            del _held[next(iter(_held))]
    held = _held.get(key)
    if held is None:
        return None
    missing = [texts[i] for i, v in zip(chosen, known, strict=True) if v is None]
    if missing:
        import torch

        torch.set_num_threads(1)  # a team would spin on the cores the service scores on
    fresh = iter(encode_fresh(missing) if missing else ())
    vectors = (
        np.stack([v if v is not None else next(fresh) for v in known]).astype(np.float32)
        if chosen
        else np.zeros((0, DIM), dtype=np.float32)
    )
    return held.features_of(texts, chosen, vectors)


def _in_child(call: Callable[..., T], *args: Any) -> T:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(
                1, multiprocessing.get_context("spawn"), initializer=_lowest_priority
            )
            atexit.register(close)
        pool = _pool
    try:
        return pool.submit(call, *args).result(timeout=DEADLINE)
    except BrokenProcessPool:  # the child died (killed, out of memory): the next call starts one
        with _lock:
            if _pool is pool:
                _pool = None
        raise


def close() -> None:
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
