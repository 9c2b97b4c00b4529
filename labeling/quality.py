"""Label quality: agreement between annotators, and labels that are likely wrong."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from training.arrays import Floats, Indices


@dataclass(frozen=True)
class TaskAgreement:
    task: Hashable
    counts: dict[str, int]  # label -> annotations that gave it
    majority: str | None  # None when the top labels tie
    share: float  # annotations that gave the top label / all annotations of the task

    @property
    def annotations(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Agreement:
    tasks: list[TaskAgreement]  # tasks with two annotations or more
    observed: float  # chance that two annotations of one task agree, over those tasks
    kappa: float  # the same, corrected for chance; nan when undefined
    method: str  # "cohen" (two annotators), "fleiss" (more) or "none" (no shared tasks)

    @property
    def disagreements(self) -> list[TaskAgreement]:
        """Tasks whose annotations differ, the most split first."""
        split = [t for t in self.tasks if len(t.counts) > 1]
        return sorted(split, key=lambda t: (t.share, -t.annotations, str(t.task)))


def latest(
    records: Iterable[tuple[Hashable, Hashable, str]],
) -> dict[Hashable, dict[Hashable, str]]:
    """task -> {annotator: label}; an annotator's later record on a task replaces theirs."""
    by_task: dict[Hashable, dict[Hashable, str]] = {}
    for task, annotator, label in records:
        by_task.setdefault(task, {})[annotator] = label
    return by_task


def task_agreement(task: Hashable, labels: Iterable[str]) -> TaskAgreement:
    counts = Counter(labels)
    ranked = counts.most_common()
    tied = len(ranked) > 1 and ranked[0][1] == ranked[1][1]
    return TaskAgreement(
        task=task,
        counts=dict(ranked),
        majority=None if tied else ranked[0][0],
        share=ranked[0][1] / counts.total(),
    )


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two annotators over the same items, in the same order."""
    if len(a) != len(b) or not a:
        raise ValueError(f"cohen_kappa needs two equal, non-empty sequences ({len(a)}, {len(b)})")
    observed = float(np.mean([x == y for x, y in zip(a, b, strict=True)]))
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / len(a) ** 2
    return _kappa(observed, expected)


def fleiss_kappa(counts: Indices) -> float:
    """Fleiss' kappa from an items x categories matrix of how many raters chose each.

    Items may have different numbers of raters (at least two each): each item's pairwise
    agreement uses its own count, which is Fleiss' formula when the counts are equal.
    """
    return _kappa(*_fleiss_parts(np.asarray(counts, dtype=np.float64)))


def _fleiss_parts(c: Indices) -> tuple[float, float]:
    if c.ndim != 2 or not len(c) or (c.sum(axis=1) < 2).any():
        raise ValueError("fleiss_kappa needs items x categories counts, two raters an item")
    raters = c.sum(axis=1)
    per_item = ((c * c).sum(axis=1) - raters) / (raters * (raters - 1))
    shares = c.sum(axis=0) / raters.sum()
    return float(per_item.mean()), float((shares * shares).sum())


def _kappa(observed: float, expected: float) -> float:
    # expected == 1 means every annotation carried one label: chance explains it all
    return (observed - expected) / (1.0 - expected) if expected < 1.0 else float("nan")


def agreement(records: Iterable[tuple[Hashable, Hashable, str]]) -> Agreement:
    """Agreement over (task, annotator, label) records, e.g. the rows of ``labels/<source>``.

    Only tasks with two annotators or more count. Cohen's kappa when exactly two
    annotators share them, Fleiss' kappa when more do.
    """
    shared = {t: a for t, a in latest(records).items() if len(a) >= 2}
    tasks = [task_agreement(t, a.values()) for t, a in shared.items()]
    if not tasks:
        return Agreement(tasks=[], observed=float("nan"), kappa=float("nan"), method="none")
    annotators = sorted({who for a in shared.values() for who in a}, key=str)
    if len(annotators) == 2:
        first, second = annotators
        a = [labels[first] for labels in shared.values()]
        b = [labels[second] for labels in shared.values()]
        observed = float(np.mean([x == y for x, y in zip(a, b, strict=True)]))
        return Agreement(tasks, observed, cohen_kappa(a, b), "cohen")
    categories = sorted({label for t in tasks for label in t.counts})
    matrix = np.array([[t.counts.get(k, 0) for k in categories] for t in tasks])
    observed, expected = _fleiss_parts(matrix.astype(np.float64))
    return Agreement(tasks, observed, _kappa(observed, expected), "fleiss")


@dataclass(frozen=True)
class LabelIssue:
    index: int  # row in the arrays given
    given: int  # the label it carries
    suggested: int  # the class the model gives most probability
    self_confidence: float  # the model's probability of the given label


def label_issues(labels: Indices, pred_probs: Floats) -> list[LabelIssue]:
    """Rows whose label is likely wrong, by confident learning, most suspect first.

    ``pred_probs`` must be out-of-sample (e.g. cross-validated): a model that saw a row's
    label in training echoes it back. A row is flagged when it lands off the diagonal of
    the confident joint, i.e. the model's probability of some other class reaches that
    class's threshold (the mean self-confidence of rows labelled with it); flagged rows
    are ranked by self-confidence, lowest first.
    """
    y = np.asarray(labels)
    p = np.asarray(pred_probs, dtype=np.float64)
    if p.ndim != 2 or y.shape != (len(p),):
        raise ValueError(f"labels {y.shape} and pred_probs {p.shape} must cover the same rows")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be class indices, got dtype {y.dtype}")
    bad = np.flatnonzero((y < 0) | (y >= p.shape[1]))
    if bad.size:
        raise ValueError(f"label {y[bad[0]]} in row {bad[0]} is not a class 0..{p.shape[1] - 1}")
    if not len(y):
        return []
    # imported here: cleanlab pulls in scikit-learn, a second's start-up for every command
    from cleanlab.filter import find_label_issues

    ranked = find_label_issues(
        y,
        p,
        filter_by="confident_learning",
        return_indices_ranked_by="self_confidence",
        n_jobs=1,
    )
    return [LabelIssue(int(i), int(y[i]), int(p[i].argmax()), float(p[i, y[i]])) for i in ranked]
