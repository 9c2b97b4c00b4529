"""Model selection benchmark on AG News: ``--model auto`` against each candidate and the
TF-IDF baseline, at several label budgets, with labels drawn at random or chosen by the
hybrid active-learning strategy; and ``harvest tune`` against the defaults.

    python -m bench.models                 # every row; about 15 minutes on two cores
    python -m bench.models --quick         # one seed, budgets 100 and 400, no tune row

Reads ``../shared/datasets/ag_news_test.csv`` (7,600 rows; skipped, with a message, when
absent). One stratified, seeded cut: 2,000 test rows, the other 5,600 the pool labels are
drawn from. For each budget (100, 400, 1,600 labels, and the whole pool) and seed, the
labels are either a stratified random draw or the hybrid strategy's picks (``labeling``'s
own, from a labelling model refitted every round of a tenth of the budget, seeded with
20 random rows). 85% of the labels train and 15% are the validation split that picks,
as in ``training.select``; every figure is on the same 2,000 test rows.

Per row: ``auto_macro_f1`` (the candidate auto chose), ``best_single_macro_f1`` (the best
candidate on test, which auto cannot know), ``baseline_macro_f1`` (TF-IDF + logistic
regression, a candidate itself) and each candidate's figures and seconds. The tune row
cuts a dataset of one budget in a temporary lake and compares ``harvest tune`` (20
trials) with ``harvest train``'s default on the test split of that version.

Writes ``bench/results/models.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.crawl import machine
from bench.train import CLASSES, CORPUS, load, take
from ingestion.datasets import stratified_split
from training import select
from training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "models.json"
TEST_ROWS = 2000
CONFIG = TrainConfig(epochs=20, patience=5, device="cpu", progress=False)
Split = tuple[list[str], list[str]]


def cut(data: Split, seed: int = 0) -> tuple[list[int], list[int]]:
    """Pool and test positions: a stratified draw of TEST_ROWS for test."""
    share = TEST_ROWS / len(data[0])
    parts = stratified_split(data[1], (1 - share, 0.0, share), seed)
    return (
        [i for i, p in enumerate(parts) if p == "train"],
        [i for i, p in enumerate(parts) if p == "test"],
    )


def random_labels(data: Split, pool: list[int], n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    picked: list[int] = []
    for c in CLASSES:
        mine = [i for i in pool if data[1][i] == c]
        picked += rng.sample(mine, min(len(mine), n // len(CLASSES)))
    return picked


def hybrid_labels(data: Split, pool: list[int], n: int, seed: int) -> list[int]:
    """The hybrid strategy's picks, as `harvest label push --strategy hybrid` makes them
    round after round, with the labels known at once."""
    from labeling import model, strategies
    from labeling.push import MEASURE, choose

    texts = [data[0][i] for i in pool]
    rng = np.random.default_rng(seed)
    labelled = list(rng.choice(len(pool), 20, replace=False))
    step = max(10, n // 10)
    while len(labelled) < n:
        fitted = model.fit([texts[i] for i in labelled], [data[1][pool[i]] for i in labelled])
        probs = fitted.predict_proba(texts)
        scores = strategies.score(probs, MEASURE)
        covered = np.zeros(len(pool), dtype=bool)
        covered[labelled] = True
        fresh = np.flatnonzero(~covered)
        k = min(step, n - len(labelled))
        picked = choose("hybrid", fresh, covered, k, texts, probs, scores, seed, fitted)
        labelled += [int(i) for i in picked]
    return [pool[i] for i in labelled[:n]]


def one_row(data: Split, picked: list[int], test: Split, seed: int) -> dict[str, Any]:
    labels = [data[1][i] for i in picked]
    parts = stratified_split(labels, (0.85, 0.15, 0.0), seed)
    train = take(data, [i for i, p in zip(picked, parts, strict=True) if p == "train"])
    val = take(data, [i for i, p in zip(picked, parts, strict=True) if p == "validation"])
    started = time.perf_counter()
    _, chosen, rows = select.best(train, val, test, CLASSES, CONFIG)
    seconds = time.perf_counter() - started
    by_name = {r["model"]: r for r in rows}
    best = max(rows, key=lambda r: r["test_macro_f1"])
    return {
        "labels": len(picked),
        "auto_model": chosen.name,
        "auto_macro_f1": round(by_name[chosen.name]["test_macro_f1"], 4),
        "best_single_model": best["model"],
        "best_single_macro_f1": round(best["test_macro_f1"], 4),
        "baseline_macro_f1": round(by_name["tfidf-logreg"]["test_macro_f1"], 4),
        "auto_seconds": round(seconds, 1),
        "candidates": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows
        ],
    }


def tune_row(data: Split, picked: list[int], trials: int) -> dict[str, Any]:
    """`harvest train` (auto) and `harvest tune` on one dataset version in a temporary lake."""
    import pyarrow as pa

    from harvest.config import Config
    from harvest.stages import tracking_store
    from ingestion.datasets import cut_dataset
    from ingestion.lake import Lake
    from training.tracking import train_tracked
    from training.tune import tune

    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        cfg = Config(lake=f"{tmp}/lake", reports=f"{tmp}/reports")
        lake = Lake(cfg.lake)
        ids = [f"r{i}" for i in picked]
        lake.append(
            "curated/ag",
            pa.table(
                {
                    "content_sha256": ids,
                    "source": ["ag"] * len(ids),
                    "url": [f"http://ag/{i}" for i in picked],
                    "body": [data[0][i] for i in picked],
                }
            ),
        )
        lake.overwrite(
            "labels/ag", pa.table({"row_id": ids, "label": [data[1][i] for i in picked]})
        )
        version = cut_dataset(lake, "ag", "ag", "labels/ag", "body", seed=0).version
        store = tracking_store(cfg)
        started = time.perf_counter()
        default = train_tracked(store, lake, "ag", version, cfg.reports, CONFIG)
        default_seconds = time.perf_counter() - started
        started = time.perf_counter()
        found = tune(store, lake, "ag", version, cfg.reports, CONFIG, trials)
        tuned = found["trained"]
        return {
            "labels": len(picked),
            "trials": found["trials"],
            "test_rows": default.rows["test"],
            "default_model": default.model,
            "default_macro_f1": round(default.test["macro_f1"], 4),
            "default_seconds": round(default_seconds, 1),
            "tuned": {k: v for k, v in found["best"].items()},
            "tuned_macro_f1": round(tuned.test["macro_f1"], 4),
            "tune_seconds": round(time.perf_counter() - started, 1),
            "defaults_best_val_macro_f1": found["defaults_best_val_macro_f1"],
            "adopted": found["adopted"],
            "margin": found["margin"],
            "tuned_model": tuned.model,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, two budgets, no tune")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not CORPUS.exists():
        print(f"skipped: {CORPUS} is absent (see ../shared/datasets/README)")
        return 0
    data = load(CORPUS)
    pool, test_idx = cut(data)
    test = take(data, test_idx)
    budgets: list[int | None] = [100, 400] if args.quick else [100, 400, 1600, None]
    seeds = range(1 if args.quick else args.seeds)
    rows = []
    for budget in budgets:
        for selection in ("random", "hybrid") if budget is not None else ("all",):
            for seed in seeds:
                started = time.perf_counter()
                if budget is None:
                    picked = list(pool)
                elif selection == "random":
                    picked = random_labels(data, pool, budget, seed)
                else:
                    picked = hybrid_labels(data, pool, budget, seed)
                chose = time.perf_counter() - started
                row = {"budget": budget or "all", "selection": selection, "seed": seed}
                row |= one_row(data, picked, test, seed) | {"selection_seconds": round(chose, 1)}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "candidates"}), flush=True)
            if budget is None:
                break  # the whole pool is the same rows whatever the seed
    tuned = None
    if not args.quick:
        tuned = tune_row(data, random_labels(data, pool, 1600, 0), args.trials)
        print(json.dumps(tuned), flush=True)
    result = {
        "machine": machine({}),
        "corpus": str(CORPUS.name),
        "test_rows": len(test_idx),
        "pool_rows": len(pool),
        "config": {"epochs": CONFIG.epochs, "patience": CONFIG.patience},
        "rows": rows,
        "summary": summary(rows),
        "tune": tuned,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means per budget and selection, with the goals' margins. The best single candidate
    is the one of best mean test macro F1 over the seeds (one model a user could have
    named); ``oracle`` is the best candidate of each run, which no choice can beat."""
    out = []

    def order(k: tuple[str, str]) -> tuple[int, str]:
        return (int(k[0]) if k[0].isdigit() else 10**9, k[1])

    for budget, selection in sorted({(str(r["budget"]), r["selection"]) for r in rows}, key=order):
        mine = [r for r in rows if str(r["budget"]) == budget and r["selection"] == selection]

        def mean(key: str, group: list[dict[str, Any]] = mine) -> float:
            return round(float(np.mean([r[key] for r in group])), 4)

        per_model: dict[str, list[float]] = {}
        for r in mine:
            for c in r["candidates"]:
                per_model.setdefault(c["model"], []).append(c["test_macro_f1"])
        fixed = max(per_model, key=lambda m: float(np.mean(per_model[m])))
        best = round(float(np.mean(per_model[fixed])), 4)
        auto = mean("auto_macro_f1")
        out.append(
            {
                "budget": budget,
                "selection": selection,
                "runs": len(mine),
                "auto_macro_f1": auto,
                "best_single_model": fixed,
                "best_single_macro_f1": best,
                "oracle_macro_f1": mean("best_single_macro_f1"),
                "baseline_macro_f1": mean("baseline_macro_f1"),
                "auto_minus_best_single": round(auto - best, 4),
                "auto_minus_baseline": round(auto - mean("baseline_macro_f1"), 4),
                "auto_models": sorted({r["auto_model"] for r in mine}),
            }
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
