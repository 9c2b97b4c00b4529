"""Agreement and label errors on data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labeling.quality import agreement, cohen_kappa, fleiss_kappa, label_issues, task_agreement

# Fleiss' (1971) worked example as given on Wikipedia: 10 items, 14 raters, 5 categories
FLEISS_EXAMPLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def two_annotators() -> tuple[list[str], list[str]]:
    """50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15.

    By hand: observed 35/50 = 0.7; A says yes 0.5, B 0.6, so chance agreement is
    0.5 * 0.6 + 0.5 * 0.4 = 0.5 and kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    """
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    return a, b


def test_cohen_kappa_matches_the_hand_computed_value() -> None:
    a, b = two_annotators()
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa(["x"] * 3, ["x"] * 3))  # one label only: undefined
    with pytest.raises(ValueError, match="equal, non-empty"):
        cohen_kappa(a, b[:-1])


def test_fleiss_kappa_matches_the_worked_example() -> None:
    # P-bar = 0.378, P-e = 0.213 (to three places), kappa = 0.210
    assert fleiss_kappa(np.array(FLEISS_EXAMPLE)) == pytest.approx(0.20993, abs=1e-5)
    with pytest.raises(ValueError, match="two raters an item"):
        fleiss_kappa(np.array([[1, 0], [1, 1]]))


def test_task_agreement_gives_majority_and_share() -> None:
    t = task_agreement(7, ["World", "Sports", "World"])
    assert (t.majority, t.share, t.annotations) == ("World", pytest.approx(2 / 3), 3)
    assert t.counts == {"World": 2, "Sports": 1}
    tie = task_agreement(8, ["World", "Sports"])
    assert (tie.majority, tie.share) == (None, 0.5)


def test_agreement_of_two_annotators_is_cohens() -> None:
    a, b = two_annotators()
    records = [(i, "ann", label) for i, label in enumerate(a)]
    records += [(i, "bob", label) for i, label in enumerate(b)]
    records.append((99, "ann", "yes"))  # one annotation only: not counted
    report = agreement(records)
    assert report.method == "cohen"
    assert len(report.tasks) == 50
    assert report.observed == pytest.approx(0.7)
    assert report.kappa == pytest.approx(0.4)
    assert len(report.disagreements) == 15
    assert {t.task for t in report.disagreements} == set(range(20, 35))


def test_agreement_of_several_annotators_is_fleiss_with_disagreements_listed() -> None:
    records = []
    for item, row in enumerate(FLEISS_EXAMPLE):
        labels = [c for c, count in enumerate(row) for _ in range(count)]
        records += [(item, f"rater{r}", f"c{c}") for r, c in enumerate(labels)]
    report = agreement(records)
    assert report.method == "fleiss"
    assert report.kappa == pytest.approx(fleiss_kappa(np.array(FLEISS_EXAMPLE)))
    assert report.observed == pytest.approx(0.378, abs=1e-3)
    split = report.disagreements
    assert [t.task for t in split][0] == 7  # item 8: most split (5 of 14 agree at best)
    assert 0 not in {t.task for t in split}  # unanimous
    assert [t.share for t in split] == sorted(t.share for t in split)


def test_an_annotators_later_label_replaces_their_earlier_one() -> None:
    records = [(1, "ann", "A"), (1, "bob", "B"), (1, "bob", "A"), (2, "ann", "A")]
    report = agreement(records)
    assert [(t.task, t.counts) for t in report.tasks] == [(1, {"A": 2})]
    assert report.disagreements == []
    assert report.observed == 1.0 and math.isnan(report.kappa)  # one label: kappa undefined


def test_no_shared_tasks_means_no_agreement() -> None:
    report = agreement([(1, "ann", "A"), (2, "bob", "B")])
    assert report.method == "none" and report.tasks == []
    assert math.isnan(report.observed) and math.isnan(report.kappa)


def synthetic(seed: int, n: int = 900, flips: int = 45) -> tuple[np.ndarray, ...]:
    """Three 2-D Gaussian classes, their exact posteriors, labels with planted errors.

    The classes stand five deviations apart, so almost every wrong label is a planted one.

    The posteriors come from the generating densities, not from a model fitted to these
    labels, so they are out-of-sample as confident learning requires.
    """
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    truth = rng.integers(0, 3, n)
    x = means[truth] + rng.normal(size=(n, 2))
    logp = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    probs = np.exp(logp - logp.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    planted = rng.choice(n, flips, replace=False)
    labels = truth.copy()
    labels[planted] = (truth[planted] + rng.integers(1, 3, flips)) % 3
    return labels, probs, truth, planted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_label_errors_are_found_with_high_precision(seed: int) -> None:
    labels, probs, truth, planted = synthetic(seed)
    issues = label_issues(labels, probs)
    flagged = {i.index for i in issues}
    found = flagged & set(planted.tolist())
    assert len(found) / len(flagged) >= 0.9  # precision
    assert len(found) / len(planted) >= 0.9  # recall
    # most suspect first, and the suggestion is mostly the true class
    confidences = [i.self_confidence for i in issues]
    assert confidences == sorted(confidences)
    assert issues[0].index in found
    assert np.mean([i.suggested == truth[i.index] for i in issues]) >= 0.9
    first = issues[0]
    assert (first.given, first.self_confidence) == (
        labels[first.index],
        probs[first.index, first.given],
    )


def test_clean_labels_raise_few_flags() -> None:
    labels, probs, _, _ = synthetic(0, flips=0)
    assert len(label_issues(labels, probs)) <= len(labels) // 100


def test_label_issues_refuses_bad_input() -> None:
    probs = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="class indices"):
        label_issues(np.array(["a", "b", "a"]), probs)
    with pytest.raises(ValueError, match="label 2 in row 1 is not a class 0..1"):
        label_issues(np.array([0, 2, 1]), probs)
    with pytest.raises(ValueError, match="same rows"):
        label_issues(np.array([0, 1]), probs)
    assert label_issues(np.array([], dtype=int), np.empty((0, 2))) == []
