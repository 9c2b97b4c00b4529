"""Split rules: which rows of a dataset version go to train, validation and test.

Three ways, all deterministic:

- ``stratified_split``: rows one by one, every class spread over the splits alike (the
  rule of versions cut before groups existed, and of cuts with no group rule).
- ``group_split``: whole groups (rows that are copies or near copies of each other) to
  one side each, greedily, so each class still lands in the splits about as the fractions
  ask; without ``stratify`` only the split sizes are balanced.
- ``time_split``: groups ordered by their oldest row, the oldest to train and the newest
  to test, for data whose future must not leak into training.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from ingestion.errors import InvalidInputError

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


class SplitError(InvalidInputError):
    pass


@dataclass(frozen=True)
class SplitRules:
    """How a dataset version is split; recorded in its lineage so a rebuild splits alike.

    ``group``: a column whose equal values stay on one side (None: rows are split one by
    one); rows that are exact or near duplicates of each other join the same group.
    ``time_field``: split by this column instead of by label.
    """

    stratify: bool = True
    group: str | None = "dup_group"
    time_field: str | None = None
    near_threshold: float = 0.7

    def canonical(self) -> SplitRules:
        # a time split ignores labels: two cuts that differ only there are the same cut
        if self.time_field is not None and self.stratify:
            return SplitRules(False, self.group, self.time_field, self.near_threshold)
        return self

    def as_lineage(self) -> dict[str, Any]:
        return {
            "stratify": self.stratify,
            "group": self.group,
            "time_field": self.time_field,
            "near_threshold": self.near_threshold,
        }

    @classmethod
    def from_lineage(cls, split: dict[str, Any] | None) -> SplitRules:
        """Rules from a lineage; versions cut before rules were recorded were stratified
        row by row."""
        if split is None:
            return LEGACY
        return cls(
            stratify=bool(split.get("stratify", True)),
            group=split.get("group"),
            time_field=split.get("time_field"),
            near_threshold=float(split.get("near_threshold", 0.7)),
        )


LEGACY = SplitRules(stratify=True, group=None, time_field=None)


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.8/0.1/0.1"`` as train, validation and test fractions."""
    parts = text.replace(",", "/").split("/")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3:
        raise SplitError(f"split {text!r}: give three fractions, train/validation/test")
    return check_fractions((values[0], values[1], values[2]))


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions):
        raise SplitError(f"split fractions {list(fractions)}: three numbers, none negative")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise SplitError(f"split fractions {list(fractions)} add up to {sum(fractions):g}, not 1")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Rows per split for ``n`` rows: validation and test rounded, train the rest."""
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    return max(0, n - n_val - n_test), n_val, n_test


def stratified_split(
    labels: list[str], fractions: tuple[float, float, float], seed: int
) -> list[str]:
    """A split name for each position, with every class spread over the splits alike."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    out = [""] * len(labels)
    for label in sorted(by_class):
        idx = by_class[label]
        rng.shuffle(idx)
        n = len(idx)
        n_val = round(n * fractions[1])
        n_test = round(n * fractions[2])
        n_train = max(0, n - n_val - n_test)
        for j, i in enumerate(idx):
            out[i] = "train" if j < n_train else "validation" if j < n_train + n_val else "test"
    return out


def _members(groups: Sequence[Hashable]) -> list[list[int]]:
    """Row positions of each group, groups in the order of their first row."""
    by_group: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    return list(by_group.values())


def group_split(
    labels: Sequence[str],
    groups: Sequence[Hashable],
    fractions: tuple[float, float, float],
    seed: int,
    stratify: bool = True,
) -> list[str]:
    """A split name for each position; the rows of a group all get the same one.

    Groups go largest first (equal sizes in an order shuffled by ``seed``), each to the
    split whose targets for the group's classes are least filled, as a share of the target:
    groups of each size are spread over the splits as the fractions ask, rather than the
    large ones all going to train. With groups of one row every class gets exactly the
    sizes ``stratified_split`` gives it.
    """
    cls = list(labels) if stratify else [""] * len(labels)
    targets = {c: split_sizes(n, fractions) for c, n in Counter(cls).items()}
    assigned = {c: [0, 0, 0] for c in targets}
    # a split asked for no rows gets none, however the others overshoot
    open_splits = [s for s in range(3) if fractions[s] > 0]
    order = _members(groups)
    random.Random(seed).shuffle(order)
    order.sort(key=len, reverse=True)  # stable: the shuffle orders groups of one size
    out = [""] * len(labels)
    for rows in order:
        count = Counter(cls[i] for i in rows)
        best = max(open_splits, key=lambda s: (_unfilled(count, targets, assigned, s), -s))
        for c, k in count.items():
            assigned[c][best] += k
        for i in rows:
            out[i] = SPLITS[best]
    return out


def _unfilled(
    count: Counter[str],
    targets: dict[str, tuple[int, int, int]],
    assigned: dict[str, list[int]],
    split: int,
) -> float:
    """How far split ``split`` is from its targets for the classes of a group, each class
    weighted by the group's rows of it."""
    return sum(
        k * (targets[c][split] - assigned[c][split]) / max(targets[c][split], 1)
        for c, k in count.items()
    )


def time_split(
    times: Sequence[Any],
    groups: Sequence[Hashable],
    fractions: tuple[float, float, float],
) -> list[str]:
    """A split name for each position: groups ordered by their oldest row (then by first
    position), the oldest to train, then validation, the newest to test."""
    order = sorted(_members(groups), key=lambda rows: (min(times[i] for i in rows), rows[0]))
    n_train, n_val, _ = split_sizes(len(times), fractions)
    out = [""] * len(times)
    done = 0
    for rows in order:
        split = "train" if done < n_train else "validation" if done < n_train + n_val else "test"
        for i in rows:
            out[i] = split
        done += len(rows)
    return out
