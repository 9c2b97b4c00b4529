"""Active-learning query strategies: which unlabelled rows to label next.

Every strategy is a pure function with one signature (``Strategy``) and returns row
indices, most useful first. ``get`` finds one by name; ``score`` gives each row the
number Label Studio sorts on (lowest = most uncertain).
"""

from __future__ import annotations

from labeling.strategies.base import Strategy
from labeling.strategies.diversity import coldstart, kcenter
from labeling.strategies.hybrid import hybrid
from labeling.strategies.uncertainty import (
    entropy,
    least_confidence,
    margin,
    random_sample,
    score,
)

STRATEGIES: dict[str, Strategy] = {
    "random": random_sample,
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
    "kcenter": kcenter,
    "hybrid": hybrid,
    "coldstart": coldstart,
}


def get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}") from None


__all__ = [
    "STRATEGIES",
    "Strategy",
    "coldstart",
    "entropy",
    "get",
    "hybrid",
    "kcenter",
    "least_confidence",
    "margin",
    "random_sample",
    "score",
]
