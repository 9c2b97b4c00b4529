"""Compiled loops (numba) for the per-byte work of curation: MinHash signatures and the
language automaton.

Each is compiled on its first call and cached on disk beside its module, or in the user's
cache folder. An installation where neither can be written (a read-only image with no home)
still works: numba refuses ``cache=True`` there, so the loop is compiled in each process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba


def compiled(fn: Callable[..., Any]) -> Any:
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)
