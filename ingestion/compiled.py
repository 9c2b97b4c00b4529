"""Compiled loops (numba) for the per-byte work of curation: MinHash signatures and the
language automaton.

Each is compiled on its first call and cached on disk beside its module, or in the user's
cache folder. An installation where neither can be written (a read-only image with no home)
still works: numba refuses ``cache=True`` there, so the loop is compiled in each process.
numba itself is imported on that first call too: a third of a second that a crawl, which
reads recipes but never curates, would pay in every process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def compiled(fn: Callable[..., Any]) -> Any:
    @functools.cache
    def build() -> Callable[..., Any]:
        import numba

        try:
            return numba.njit(cache=True, nogil=True)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(nogil=True)(fn)

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        return build()(*args)

    return call
