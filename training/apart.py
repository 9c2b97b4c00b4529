"""Torch work off a long-lived process's scoring thread, in a thread that ends with it.

libgomp keeps an OpenMP team for every thread that has run a parallel op, for as long as
that thread lives. Once the live teams hold more threads than there are CPUs, every team
stops spinning between parallel regions and sleeps on a futex instead. A MiniLM forward
pass is hundreds of small regions, so a service whose loader or watcher thread had once
touched torch scored each lone text several milliseconds slower: about 120 futex sleeps a
call, against none. Loading a model, or scoring a training split for its profile, in a
thread that ends afterwards leaves the scoring thread's team the only one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_apart(call: Callable[[], T], name: str = "torch-apart") -> T:
    """``call()`` in a fresh thread, joined: its result, or its exception raised here."""
    out: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # re-raised in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return out[0]
