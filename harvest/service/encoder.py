"""Sentence encoding for the prediction log, in a child process at the lowest priority.

A drift feature needs each logged text's MiniLM vector. Encoded in the service's own
process, those vectors took the cores the requests are scored on: on 2 cores a lone
n-gram request waited about 3 ms longer with the log on than off. A child at nice 19 gets
only the CPU time scoring leaves, whatever threads torch starts in it. One child serves
the whole process; it starts on the first encoding and ends with the process.

A model built on MiniLM has already computed the vectors of the texts it scored: those
are taken from the process's cache. Encoding them again in the child, beside a MiniLM
forward pass on the same 2 cores, slowed a lone request by several milliseconds.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from training.arrays import Floats
from training.embedding import DIM, already_embedded
from training.profile import encode_fresh

DEADLINE = 120.0  # seconds an encoding may take, the child's start included
_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _lowest_priority() -> None:
    os.nice(19)


def encode(texts: list[str]) -> Floats:
    """Unit-length MiniLM vectors of ``texts``: those scoring computed, and the others
    from the low-priority child."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    known = already_embedded(texts)
    missing = [t for t, v in zip(texts, known, strict=True) if v is None]
    fresh = iter(_in_child(missing) if missing else ())
    return np.stack([v if v is not None else next(fresh) for v in known]).astype(np.float32)


def _in_child(texts: list[str]) -> Floats:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(
                1, multiprocessing.get_context("spawn"), initializer=_lowest_priority
            )
            atexit.register(close)
        pool = _pool
    try:
        return pool.submit(encode_fresh, texts).result(timeout=DEADLINE)
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
