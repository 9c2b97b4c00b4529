"""Query strategies on small arrays whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from labeling import strategies
from labeling.strategies import STRATEGIES, score
from labeling.strategies.hybrid import POOL_FACTOR
from labeling.strategies.uncertainty import margin_uncertainty

RNG = np.random.default_rng


def blobs(sizes: list[int], seed: int = 0, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Well separated 2-D blobs: (points, blob of each point)."""
    rng = RNG(seed)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0], [40.0, 40.0]])
    blob = np.repeat(np.arange(len(sizes)), sizes)
    return centres[blob] + rng.normal(scale=spread, size=(len(blob), 2)), blob


def test_registry_finds_every_strategy_and_names_the_unknown() -> None:
    assert set(STRATEGIES) == {
        "random",
        "least_confidence",
        "margin",
        "entropy",
        "kcenter",
        "hybrid",
        "coldstart",
    }
    assert strategies.get("margin") is strategies.margin
    with pytest.raises(ValueError, match=r"unknown strategy 'badge'; known: random, "):
        strategies.get("badge")


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("least_confidence", "probs"),
        ("margin", "probs"),
        ("entropy", "probs"),
        ("hybrid", "probs"),
        ("kcenter", "embeddings"),
        ("coldstart", "embeddings"),
    ],
)
def test_a_missing_input_is_named(name: str, missing: str) -> None:
    probs = np.full((4, 2), 0.5) if missing == "embeddings" else None
    emb = np.zeros((4, 3)) if missing == "probs" else None
    with pytest.raises(ValueError, match=rf"strategy '{name}' needs .*{missing}"):
        strategies.get(name)(probs, emb, 2, RNG(0))


def test_bad_inputs_are_refused_clearly() -> None:
    logits = np.array([[2.0, 1.0], [0.5, 0.5]])
    with pytest.raises(ValueError, match=r"'margin': probs row 0 does not sum to 1"):
        strategies.margin(logits, None, 1, RNG(0))
    with pytest.raises(ValueError, match="probs has 2 rows, embeddings 3"):
        strategies.hybrid(np.full((2, 2), 0.5), np.zeros((3, 2)), 1, RNG(0))
    with pytest.raises(ValueError, match="labelled index out of range"):
        strategies.entropy(np.full((2, 2), 0.5), None, 1, RNG(0), labelled=np.array([2]))
    with pytest.raises(ValueError, match="n must be >= 0"):
        strategies.entropy(np.full((2, 2), 0.5), None, -1, RNG(0))
    with pytest.raises(ValueError, match="needs probs or embeddings"):
        strategies.random_sample(None, None, 1, RNG(0))


def test_least_confidence_picks_the_lowest_top_probability() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.6, 0.3, 0.1], [0.5, 0.5, 0.0]])
    assert strategies.least_confidence(probs, None, 2, RNG(0)).tolist() == [1, 3]


def test_margin_picks_the_closest_top_two() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.7, 0.2, 0.1], [0.36, 0.34, 0.30], [0.45, 0.55, 0.0]])
    assert strategies.margin(probs, None, 4, RNG(0)).tolist() == [2, 3, 0, 1]


def test_margin_breaks_ties_by_entropy_then_index() -> None:
    probs = np.array(
        [
            [0.45, 0.45, 0.10],  # margin 0, lower entropy
            [0.40, 0.40, 0.20],  # margin 0, higher entropy
            [0.40, 0.40, 0.20],  # same again: the lower index wins
            [0.90, 0.05, 0.05],
        ]
    )
    for seed in range(3):  # the rng plays no part
        assert strategies.margin(probs, None, 4, RNG(seed)).tolist() == [1, 2, 0, 3]
    # ties that differ only by float rounding still fall to the index
    noisy = np.array([[0.3, 0.3, 0.4], [0.1 + 0.2, 0.3, 0.4]])
    noisy /= noisy.sum(axis=1, keepdims=True)
    assert strategies.margin(noisy, None, 2, RNG(0)).tolist() == [0, 1]


def test_entropy_ranks_uniform_rows_first() -> None:
    probs = np.array(
        [[1.0, 0.0, 0.0, 0.0], [0.25] * 4, [0.7, 0.1, 0.1, 0.1], [0.25] * 4, [0.4, 0.4, 0.1, 0.1]]
    )
    assert strategies.entropy(probs, None, 5, RNG(0)).tolist() == [1, 3, 4, 2, 0]


def test_labelled_rows_are_never_picked_and_n_is_capped() -> None:
    probs = np.array([[0.5, 0.5], [0.6, 0.4], [0.9, 0.1]])
    labelled = np.array([0])
    for name in ("random", "least_confidence", "margin", "entropy"):
        picked = strategies.get(name)(probs, None, 10, RNG(0), labelled)
        assert sorted(picked.tolist()) == [1, 2], name
        assert strategies.get(name)(probs, None, 0, RNG(0)).size == 0


def test_random_is_reproducible_by_seed() -> None:
    emb = np.zeros((100, 2))
    a = strategies.random_sample(None, emb, 10, RNG(7))
    assert a.tolist() == strategies.random_sample(None, emb, 10, RNG(7)).tolist()
    assert a.tolist() != strategies.random_sample(None, emb, 10, RNG(8)).tolist()
    assert len(set(a.tolist())) == 10
    assert 3 not in strategies.random_sample(None, emb, 99, RNG(7), labelled=np.array([3]))


def test_kcenter_picks_far_apart_points() -> None:
    line = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]])
    # from the labelled point at 0: 20 is farthest, then 10 (10 from both) beats 11 (9 from 20)
    assert strategies.kcenter(None, line, 2, RNG(0), labelled=np.array([0])).tolist() == [5, 3]
    emb, blob = blobs([10, 10, 10])
    for seed in range(5):
        picked = strategies.kcenter(None, emb, 3, RNG(seed))
        assert sorted(blob[picked].tolist()) == [0, 1, 2]


def test_kcenter_never_repeats_duplicates() -> None:
    picked = strategies.kcenter(None, np.zeros((5, 3)), 5, RNG(0))
    assert sorted(picked.tolist()) == [0, 1, 2, 3, 4]


def test_coldstart_picks_one_central_point_per_cluster_biggest_first() -> None:
    emb, blob = blobs([25, 10, 40, 15])
    for seed in range(5):
        picked = strategies.coldstart(None, emb, 4, RNG(seed))
        assert blob[picked].tolist() == [2, 0, 3, 1]  # by cluster size, largest first
        for i in picked:  # the point nearest its blob's centre, or close to it
            members = emb[blob == blob[i]]
            assert np.linalg.norm(emb[i] - members.mean(axis=0)) < 0.3


def test_coldstart_copes_with_fewer_distinct_points_than_n() -> None:
    emb = np.zeros((6, 2))
    emb[:3] = 1.0
    picked = strategies.coldstart(None, emb, 4, RNG(0), labelled=np.array([5]))
    assert len(set(picked.tolist())) == 4
    assert 5 not in picked
    assert strategies.coldstart(None, emb, 0, RNG(0)).size == 0


def test_hybrid_returns_distinct_uncertain_and_spread_rows() -> None:
    rng = RNG(0)
    n = 2
    half = n * POOL_FACTOR // 2
    emb, blob = blobs([half, half, 30, 30])  # the uncertain pool is blobs 0 and 1
    # blob 0 is the most uncertain, blob 1 nearly so, blobs 2 and 3 are sure
    top = np.select([blob == 0, blob == 1], [0.50, 0.55], 0.95) + rng.uniform(0, 0.01, len(blob))
    probs = np.stack([top, 1 - top], axis=1)
    for seed in range(5):
        picked = strategies.hybrid(probs, emb, n, RNG(seed))
        assert len(set(picked.tolist())) == n
        pool = np.argsort(-margin_uncertainty(probs), kind="stable")[: n * POOL_FACTOR]
        assert set(picked.tolist()) <= set(pool.tolist())
        assert set(blob[picked].tolist()) == {0, 1}  # one from each uncertain blob
        assert blob[picked[0]] == 0  # the more uncertain first
        for i in picked:  # each its blob's typical row, not an outlier of it
            members = emb[blob == blob[i]]
            assert np.linalg.norm(emb[i] - members.mean(axis=0)) < 0.3
    assert set(blob[strategies.margin(probs, None, n, RNG(0))].tolist()) == {0}


def test_score_sorts_most_uncertain_first() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1], [0.5, 0.5, 0.0]])
    for measure in ("least_confidence", "margin", "entropy"):
        s = score(probs, measure)
        assert ((s >= 0) & (s <= 1)).all()
        assert s[0] == pytest.approx(1.0) and s[1] == pytest.approx(0.0)
        # ascending score is the order the strategy of the same name picks in
        picked = strategies.get(measure)(probs, None, 4, RNG(0))
        assert np.argsort(s, kind="stable").tolist() == picked.tolist()
    assert score(probs)[2] == pytest.approx((0.6 - 1 / 3) / (1 - 1 / 3))
    with pytest.raises(ValueError, match="unknown uncertainty measure 'variance'"):
        score(probs, "variance")
