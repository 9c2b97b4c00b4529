"""Active-learning benchmark: learning curves of the query strategies through a real Label Studio.

AG News (``../shared/datasets/ag_news_test.csv``) is served by the demo site, crawled and
curated by ``harvest crawl demo`` into a lake, once for the whole run. A fixed, stratified
held-out part of the curated rows is never pushed; the rest is the pool. Each strategy, for
each seed, gets a fresh project in one Label Studio started for the run:

- seed round: the same random rows for every strategy of a seed, so the curves start equal;
- then, round after round: ``labeling.push.push`` imports the strategy's picks with the
  current model's predictions, the simulated annotator labels them through the API from
  the demo site's ground truth, ``LabelSync.pull`` brings every label back into the lake,
  and ``labeling.model.fit`` retrains on what was pulled; the held-out accuracy and macro
  F1 are recorded at every label count.

The model is the labelling model harvest uses (``labeling.model``: TF-IDF and MiniLM
sentence embeddings, a logistic regression); each text is encoded once for the whole run.
The reference is the same model fitted on the whole pool with its true labels. Prints a
table and writes ``bench/results/al.json`` and ``bench/results/al-curves.png``.

    python -m bench.al            # 3 seeds, rounds of 40 up to 1,600 labels
    python -m bench.al --quick    # a check: 1 seed, up to 400 labels
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from bench.crawl import machine
from bench.push import label_studio_version
from harvest.demosite import CLASSES, DemoSite, generate
from harvest.workers import free_port
from ingestion.lake import Lake
from labeling import features, model, push
from labeling.server import LabelStudioServer
from labeling.strategies.hybrid import POOL_FACTOR
from labeling.sync import LabelSync, choice_result

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "al.json"
CURVES = ROOT / "bench" / "results" / "al-curves.png"
CORPUS = ROOT.parent / "shared" / "datasets" / "ag_news_test.csv"
LABEL_STUDIO = ROOT / ".venv-labelstudio" / "bin" / "label-studio"
SOURCE = "demo"  # the demo site's recipe, sources/demo.yaml
TEXT_FIELD = "body"  # the recipe's text_field: what harvest pushes to Label Studio
# 7,600 corpus rows plus the 200 copies and 200 near copies the generator plants at this
# size: every row of the file is served once
SITE_ARTICLES = 8000
SITE_SEED = 7
SPLIT_SEED = 0
STRATEGIES = ("random", "entropy", "margin", "hybrid")
ANNOTATORS = 4  # simulated annotators labelling at once
# Label Studio's SQLite database, the lake and the crawl's files are thrown away after the
# run: in memory, where there is a tmpfs, each annotation's commits skip the disk's fsync,
# which on a busy disk took longer than the request itself
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
TARGET = 0.95  # share of the full-pool accuracy a strategy has to reach


@dataclass
class Corpus:
    pool: list[dict[str, str]]  # row_id, url, text: what push imports
    pool_labels: list[str]
    held_texts: list[str]
    held_labels: list[str]
    truth: dict[str, str]  # url -> class, the simulated annotator's oracle
    facts: dict[str, Any]


@dataclass
class Run:
    strategy: str
    seed: int
    labels: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    macro_f1: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


# --- the corpus: served, crawled and curated by harvest, once


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def crawl_and_curate(folder: Path) -> tuple[Lake, dict[str, str], dict[str, Any]]:
    """Serves the corpus from the demo site and runs ``harvest crawl demo`` (crawl, then the
    gate) into a lake in ``folder``; returns the lake, the ground truth and the summary."""
    site = generate(SITE_ARTICLES, SITE_SEED, CORPUS)
    # from a folder of its own, so a harvest.toml in the checkout cannot redirect it
    env = {
        **os.environ,
        "HARVEST_LAKE": str(folder / "lake"),
        "HARVEST_REPORTS": str(folder / "reports"),
        "HARVEST_SOURCES": str(ROOT / "sources"),
        "HARVEST_LABEL_STUDIO_DATA_DIR": str(folder / "ls-config"),
    }
    argv = [sys.executable, "-m", "harvest.cli", "crawl", SOURCE, "--fresh"]
    with DemoSite(site) as demo:
        classes = site.truth(demo.url)["classes"]
        assert isinstance(classes, dict)
        truth = {str(k): str(v) for k, v in classes.items()}
        print(f"crawling {len(site.articles):,} pages from {demo.url} and curating", flush=True)
        start = time.monotonic()
        proc = subprocess.run(
            [*argv, "--start-url", demo.url + "/"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = round(time.monotonic() - start, 1)
    if proc.returncode:
        raise SystemExit(f"harvest crawl failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    facts = {k: summary.get(k) for k in ("pages", "items", "curated", "quarantined")}
    facts.update(
        duplicates_dropped=summary.get("duplicates_dropped"),
        near_duplicates_dropped=summary.get("near_duplicates_dropped"),
        site_articles=len(site.articles),
        crawl_and_curate_seconds=seconds,
    )
    return Lake(folder / "lake"), truth, facts


def split(lake: Lake, truth: dict[str, str], held_out: int) -> Corpus:
    """The curated rows, less a stratified held-out part fixed by SPLIT_SEED."""
    table = lake.read(f"curated/{SOURCE}", columns=["content_sha256", "url", TEXT_FIELD])
    rows = sorted(
        (
            {"row_id": h, "url": u, "text": t}
            for h, u, t in zip(*(table[c].to_pylist() for c in table.column_names), strict=True)
        ),
        key=lambda r: r["row_id"],
    )
    rng = np.random.default_rng(SPLIT_SEED)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_class[truth[r["url"]]].append(i)
    held: set[int] = set()
    for name in sorted(by_class):
        members = by_class[name]
        # each class keeps its share of the rows in the held-out part
        k = round(held_out * len(members) / len(rows))
        held.update(int(i) for i in rng.choice(members, k, replace=False))
    pool = [r for i, r in enumerate(rows) if i not in held]
    held_rows = [rows[i] for i in sorted(held)]
    facts = {
        "curated": len(rows),
        "pool": len(pool),
        "held_out": len(held_rows),
        "held_out_classes": dict(sorted(Counter(truth[r["url"]] for r in held_rows).items())),
    }
    return Corpus(
        pool=pool,
        pool_labels=[truth[r["url"]] for r in pool],
        held_texts=[r["text"] for r in held_rows],
        held_labels=[truth[r["url"]] for r in held_rows],
        truth=truth,
        facts=facts,
    )


# --- one run of the loop


def evaluate(
    m: model.LabelModel, texts: Sequence[str], labels: Sequence[str]
) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    predicted = m.predict(texts)
    accuracy = float(accuracy_score(labels, predicted))
    f1 = float(f1_score(labels, predicted, labels=CLASSES, average="macro", zero_division=0))
    return accuracy, f1


def annotate(sync: LabelSync, project_id: int, truth: dict[str, str]) -> int:
    """The simulated annotator: labels every task still unlabelled, through the API.

    It asks only for the unlabelled tasks (the batch just imported), where
    ``labeling.simulate`` lists every task of the project with all its fields, a cost that
    would grow with every round. ANNOTATORS label at once, as a team would: each
    annotation is a request of about 0.1 s, most of a round, and Label Studio serves
    requests in threads.
    """

    def label(task: Any) -> None:
        sync.call(
            f"annotating task {task.id}",
            sync.client.annotations.create,
            id=task.id,
            result=choice_result(truth[task.data["url"]]),
            lead_time=1.0,
        )

    tasks = push.unlabelled_tasks(sync, project_id)
    with ThreadPoolExecutor(ANNOTATORS) as team:
        list(team.map(label, tasks))
    return len(tasks)


def seed_rows(corpus: Corpus, seed: int, n: int) -> list[dict[str, str]]:
    """The seed round of ``seed``: random rows, the same for every strategy."""
    rng = np.random.default_rng(seed)
    while True:
        picked = rng.choice(len(corpus.pool), n, replace=False)
        # the model needs two classes; with four balanced ones this almost never repeats
        if len({corpus.pool_labels[i] for i in picked}) >= 2:
            return [corpus.pool[i] for i in picked]


def run_one(
    sync: LabelSync, corpus: Corpus, strategy: str, seed: int, args: argparse.Namespace
) -> Run:
    run = Run(strategy, seed)
    clock = time.perf_counter

    def timed(phase: str, fn: Any, *a: Any, **kw: Any) -> Any:
        start = clock()
        result = fn(*a, **kw)
        run.seconds[phase] += clock() - start
        return result

    text = {r["row_id"]: r["text"] for r in corpus.pool}
    project = timed("push", sync.project, f"bench al {strategy} seed {seed}", CLASSES)
    table = f"labels/al_{strategy}_s{seed}"
    current: model.LabelModel | None = None
    labelled = 0
    while labelled < args.max_labels:
        if current is None:
            # nothing to score with yet: every seed row goes, in the order drawn
            rows = seed_rows(corpus, seed, min(args.seed_labels, args.max_labels))
            result = timed("push", push.push, sync, project, rows)
        else:
            n = min(args.round, args.max_labels - labelled)
            # the same seed every round, as `harvest label push --seed` would be given
            result = timed(
                "push", push.push, sync, project, corpus.pool, current, strategy, n, seed
            )
        if result.imported == 0:
            break
        timed("annotate", annotate, sync, project, corpus.truth)
        pulled, _ = timed("pull", sync.pull, project, table)
        labels = timed("pull", sync.lake.read, table, columns=["row_id", "label"]).to_pylist()
        if pulled != labelled + result.imported or len(labels) != pulled:
            raise RuntimeError(
                f"{strategy} seed {seed}: expected {labelled + result.imported} labels "
                f"back from Label Studio, pulled {pulled}"
            )
        labelled = pulled
        current = timed(
            "fit",
            model.fit,
            [text[r["row_id"]] for r in labels],
            [r["label"] for r in labels],
            f"al-{strategy}-s{seed}-n{labelled}",
        )
        accuracy, f1 = timed("evaluate", evaluate, current, corpus.held_texts, corpus.held_labels)
        run.labels.append(labelled)
        run.accuracy.append(round(accuracy, 5))
        run.macro_f1.append(round(f1, 5))
    return run


# --- the figures


def area(labels: Sequence[int], values: Sequence[float]) -> float:
    """Area under the curve over the label range, divided by the range: a mean accuracy."""
    x, y = np.asarray(labels, dtype=float), np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(y[0]) if len(y) else float("nan")
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def first_reaching(labels: Sequence[int], values: Sequence[float], target: float) -> int | None:
    return next((n for n, v in zip(labels, values, strict=True) if v >= target), None)


def summarise(runs: list[Run], full_accuracy: float) -> dict[str, Any]:
    target = TARGET * full_accuracy
    out: dict[str, Any] = {}
    for strategy in dict.fromkeys(r.strategy for r in runs):
        mine = [r for r in runs if r.strategy == strategy]
        labels = mine[0].labels
        if any(r.labels != labels for r in mine):
            raise RuntimeError(f"{strategy}: seeds reached different label counts")
        acc = np.array([r.accuracy for r in mine])
        f1 = np.array([r.macro_f1 for r in mine])
        mean = acc.mean(axis=0)
        out[strategy] = {
            "labels": labels,
            "accuracy_mean": [round(float(v), 5) for v in mean],
            "accuracy_std": [round(float(v), 5) for v in acc.std(axis=0)],
            "macro_f1_mean": [round(float(v), 5) for v in f1.mean(axis=0)],
            "macro_f1_std": [round(float(v), 5) for v in f1.std(axis=0)],
            "auc": round(area(labels, mean), 5),
            "auc_per_seed": [round(area(labels, r.accuracy), 5) for r in mine],
            "labels_to_target": first_reaching(labels, mean, target),
            "labels_to_target_per_seed": [first_reaching(labels, r.accuracy, target) for r in mine],
            "seconds": round(sum(sum(r.seconds.values()) for r in mine), 1),
            "seconds_by_phase": {
                phase: round(sum(r.seconds.get(phase, 0.0) for r in mine), 1)
                for phase in ("push", "annotate", "pull", "fit", "evaluate")
            },
        }
    if "random" in out:
        base = out["random"]
        for s in out.values():
            s["ratio_to_random"] = (
                round(s["labels_to_target"] / base["labels_to_target"], 3)
                if s["labels_to_target"] and base["labels_to_target"]
                else None
            )
            # the seed round is shared, so the curves start level: "above" counts from there on
            pairs = list(zip(s["accuracy_mean"][1:], base["accuracy_mean"][1:], strict=True))
            s["points_above_random"] = sum(a > b for a, b in pairs)
            s["points_compared"] = len(pairs)
            s["above_random_everywhere"] = bool(pairs) and all(a > b for a, b in pairs)
            s["min_gap_to_random"] = round(min((a - b for a, b in pairs), default=0.0), 5)
    return out


def verdict(summary: dict[str, Any], max_labels: int) -> dict[str, Any]:
    """The best strategy (fewest labels to the target, then the largest area) against random."""
    others = {k: v for k, v in summary.items() if k != "random"}
    if "random" not in summary or not others:
        return {"best": None, "met": None, "why": "needs random and at least one other strategy"}
    never = max_labels + 1

    def rank(name: str) -> tuple[int, float]:
        s = others[name]
        return (s["labels_to_target"] or never, -s["auc"])

    best = min(others, key=rank)
    b, r = others[best], summary["random"]
    if b["labels_to_target"] is None:
        half, why = False, f"{best} never reaches the target within {max_labels} labels"
    elif r["labels_to_target"] is None:
        # random needs more than max_labels: half of that is at least max_labels / 2
        half = b["labels_to_target"] <= max_labels / 2
        why = f"random never reaches the target within {max_labels} labels"
    else:
        half = b["labels_to_target"] <= r["labels_to_target"] / 2
        why = f"{b['labels_to_target']} labels against random's {r['labels_to_target']}"
    return {
        "best": best,
        "half_the_labels": half,
        "above_random_everywhere": b["above_random_everywhere"],
        "met": half and b["above_random_everywhere"],
        "why": why,
    }


def table(summary: dict[str, Any], full: dict[str, Any], marks: Sequence[int]) -> str:
    def cell(value: int | None, base: int | None) -> str:
        return str(value) if value is not None else f"> {base}"

    cols = [n for n in marks if n in next(iter(summary.values()))["labels"]]
    head = f"{'strategy':<9}" + "".join(f" {'acc@' + str(n):>13}" for n in cols)
    head += f" {'AUC':>7} {'labels to 95%':>13} {'vs random':>9} {'above random':>12} {'s':>7}"
    lines = [head, "-" * len(head)]
    for name, s in summary.items():
        at = {n: i for i, n in enumerate(s["labels"])}
        line = f"{name:<9}"
        for n in cols:
            i = at[n]
            line += f" {s['accuracy_mean'][i]:>7.4f}±{s['accuracy_std'][i]:.3f}"
        ratio = s.get("ratio_to_random")
        above = f"{s.get('points_above_random', 0)}/{s.get('points_compared', 0)}"
        line += f" {s['auc']:>7.4f} {cell(s['labels_to_target'], s['labels'][-1]):>13}"
        line += f" {'-' if ratio is None else f'{ratio:.2f}':>9} {above:>12} {s['seconds']:>7.0f}"
        lines.append(line)
    lines.append(
        f"full pool ({full['rows']:,} labels): accuracy {full['accuracy']:.4f}, macro F1 "
        f"{full['macro_f1']:.4f}; 95% of it: {full['target']:.4f}"
    )
    return "\n".join(lines)


def plot(summary: dict[str, Any], full: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharex=True)
    for name, s in summary.items():
        x = np.asarray(s["labels"])
        for ax, key in zip(axes, ("accuracy", "macro_f1"), strict=True):
            mean, std = np.asarray(s[f"{key}_mean"]), np.asarray(s[f"{key}_std"])
            (line,) = ax.plot(x, mean, label=name, linewidth=1.6)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    for ax, key, label in (
        (axes[0], "accuracy", "held-out accuracy"),
        (axes[1], "macro_f1", "held-out macro F1"),
    ):
        ax.axhline(full[key], color="black", linewidth=1, label=f"full pool ({full['rows']:,})")
        ax.set_xlabel("labels")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].axhline(
        full["target"],
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"95% of full ({full['target']:.3f})",
    )
    axes[0].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="runs per strategy (seeds 0..N-1)")
    parser.add_argument("--max-labels", type=int, default=1600)
    parser.add_argument("--round", type=int, default=40, help="labels per round")
    parser.add_argument("--seed-labels", type=int, default=40, help="random labels to start")
    parser.add_argument("--held-out", type=int, default=1600, help="rows never pushed")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--quick", action="store_true", help="1 seed, up to 400 labels")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=CURVES)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.max_labels = 1, 400
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for s in strategies:
        push.resolve_strategy(s, None)  # an unknown name fails here, before any work
    if not CORPUS.exists():
        raise SystemExit(
            f"cannot run: {CORPUS} is absent (the shared datasets are not on this machine)"
        )
    if not LABEL_STUDIO.exists():
        raise SystemExit(
            f"cannot run: Label Studio is not installed at {LABEL_STUDIO}; run `make setup`"
        )

    started = time.monotonic()
    report: dict[str, Any] = {
        "machine": machine(
            {
                "label-studio": label_studio_version(),
                "label-studio-sdk": version("label-studio-sdk"),
                "scikit-learn": version("scikit-learn"),
            }
        ),
        "settings": {
            "strategies": strategies,
            "seeds": list(range(args.seeds)),
            "seed_labels": args.seed_labels,
            "round": args.round,
            "max_labels": args.max_labels,
            "held_out": args.held_out,
            "split_seed": SPLIT_SEED,
            "text_field": TEXT_FIELD,
            "target_share": TARGET,
            "model_features": features.DEFAULT,
            "hybrid_pool_factor": POOL_FACTOR,
            "annotators": ANNOTATORS,
            "scratch": SCRATCH or tempfile.gettempdir(),
        },
    }
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-al-", dir=SCRATCH) as tmp:
        folder = Path(tmp)
        lake, truth, crawl = crawl_and_curate(folder)
        corpus = split(lake, truth, args.held_out)
        report["corpus"] = {
            "path": str(CORPUS),
            "sha256": sha256(CORPUS),
            **crawl,
            **corpus.facts,
        }
        print(
            f"curated {corpus.facts['curated']:,} rows: pool {len(corpus.pool):,}, "
            f"held out {len(corpus.held_texts):,}",
            flush=True,
        )

        start = time.perf_counter()
        reference = model.fit([r["text"] for r in corpus.pool], corpus.pool_labels, "al-full")
        fit_s = time.perf_counter() - start
        accuracy, f1 = evaluate(reference, corpus.held_texts, corpus.held_labels)
        full = {
            "rows": len(corpus.pool),
            "accuracy": round(accuracy, 5),
            "macro_f1": round(f1, 5),
            "target": round(TARGET * accuracy, 5),
            "fit_seconds": round(fit_s, 2),
        }
        report["full"] = full
        print(f"full pool: accuracy {accuracy:.4f}, macro F1 {f1:.4f}", flush=True)

        server = LabelStudioServer(
            executable=str(LABEL_STUDIO),
            data_dir=folder / "ls",
            port=free_port(),
            username="bench@harvest.test",
            password=secrets.token_hex(8),
            token=secrets.token_hex(20),
        )
        print(f"starting Label Studio on {server.url} (first start migrates, ~1 min)", flush=True)
        ls_start = time.monotonic()
        server.start(600)
        report["label_studio_start_seconds"] = round(time.monotonic() - ls_start, 1)
        try:
            sync = LabelSync(server.url, server.token, lake)
            # seed-major, so a cut-short run still has every strategy on the same seeds
            for seed in range(args.seeds):
                for strategy in strategies:
                    run = run_one(sync, corpus, strategy, seed, args)
                    runs.append(run)
                    took = sum(run.seconds.values())
                    print(
                        f"{strategy:>8} seed {seed}: {run.labels[-1]} labels, accuracy "
                        f"{run.accuracy[0]:.4f} -> {run.accuracy[-1]:.4f} in {took:.0f} s",
                        flush=True,
                    )
        finally:
            server.stop()

    summary = summarise(runs, full["accuracy"])
    report["strategies"] = summary
    report["goal"] = verdict(summary, args.max_labels)
    report["runs"] = [
        {
            "strategy": r.strategy,
            "seed": r.seed,
            "labels": r.labels,
            "accuracy": r.accuracy,
            "macro_f1": r.macro_f1,
            "seconds": {k: round(v, 2) for k, v in r.seconds.items()},
        }
        for r in runs
    ]
    report["wall_seconds"] = round(time.monotonic() - started, 1)

    marks = sorted(
        {
            args.seed_labels,
            2 * args.seed_labels,
            args.max_labels // 4,
            args.max_labels // 2,
            args.max_labels,
        }
    )
    print(
        f"\nactive learning, {report['machine']['date']}, {os.cpu_count()} CPUs, "
        f"{args.seeds} seed(s), rounds of {args.round} to {args.max_labels} labels, "
        f"wall {report['wall_seconds']:.0f} s\n"
    )
    print(table(summary, full, marks))
    goal = report["goal"]
    print(
        f"\nbest: {goal['best']}; half the labels of random: {goal.get('half_the_labels')} "
        f"({goal['why']}); above random at every point: "
        f"{goal.get('above_random_everywhere')}; goal met: {goal['met']}"
    )
    title = (
        f"AG News via harvest and Label Studio: {args.seeds} seed(s), mean ± std, "
        f"held-out {len(corpus.held_texts):,} rows"
    )
    plot(summary, full, title, args.plot)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
