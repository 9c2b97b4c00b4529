"""run_apart: torch work in a thread that ends with it (training/apart.py)."""

from __future__ import annotations

import threading

import pytest
import torch

from training.apart import run_apart


def test_the_call_runs_in_a_thread_that_is_gone_after() -> None:
    ran_in: list[threading.Thread] = []

    def call() -> float:
        ran_in.append(threading.current_thread())
        return float((torch.ones(64, 64) @ torch.ones(64, 64)).sum())

    assert run_apart(call) == 64.0 * 64 * 64
    (thread,) = ran_in
    assert thread is not threading.current_thread()
    assert not thread.is_alive()


def test_its_exception_is_raised_in_the_caller() -> None:
    class BrokenModelError(Exception):
        pass

    def call() -> None:
        raise BrokenModelError("no weights in model.pt")

    with pytest.raises(BrokenModelError, match="no weights"):
        run_apart(call)
