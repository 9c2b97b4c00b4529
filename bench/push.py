"""Push benchmark: 10,000 tasks with pre-annotations into a real Label Studio.

A Label Studio server is started for the run (its own data folder, loopback, a free
port), as the tests start theirs. Rows, all against that server, one after the other:

(a) peer: ``LabelSync.push``, the plain push: every row a task, no prediction, 500 a request
(e) the sentence vectors of the pool, encoded once per row (``labeling.features``): the
    model reads them; a push encodes the rows it has not seen, and keeps them
(b) ``labeling.push.push``: the labelling model scores a pool of twice as many rows,
    least confidence picks the batch, each task imported with its prediction and score,
    1,000 a request
(c) ``labeling.push.refresh``: a retrained model replaces the predictions of every
    unlabelled task (those (b) created)
(d) ``labeling.push.push`` again, with the retrained model, on the same project: the next
    batch, after checking every row against the tasks (b) created, so none is imported twice

    python -m bench.push            # 10,000 tasks a push, from a pool of 20,000 rows
    python -m bench.push --quick    # a check: 1,000 tasks
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.crawl import machine
from harvest.workers import free_port
from ingestion.lake import Lake
from labeling import features, model, push
from labeling.server import LabelStudioServer
from labeling.sync import LabelSync

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "push.json"
LABEL_STUDIO = ROOT / ".venv-labelstudio" / "bin" / "label-studio"
CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
TRAIN_ROWS = 400
_rng = np.random.default_rng(0)
SHARED = [f"w{i}" for i in range(2000)]
TOPIC = {c: [f"{c[:3].lower()}{i}" for i in range(60)] for c in CLASSES}


def rows(n: int, seed: int, prefix: str) -> tuple[list[dict[str, str]], list[str]]:
    """News-sized synthetic rows (about 60 words): shared words and a topic's own words in
    a proportion that varies, so the model is sure of some rows and unsure of others."""
    rng = np.random.default_rng(seed)
    out, truth = [], []
    for i in range(n):
        topic = CLASSES[int(rng.integers(len(CLASSES)))]
        own = int(rng.integers(0, 12))
        words = list(rng.choice(SHARED, 60 - own)) + list(rng.choice(TOPIC[topic], own))
        rng.shuffle(words)
        out.append(
            {"row_id": f"{prefix}{i}", "url": f"http://bench/{prefix}{i}", "text": " ".join(words)}
        )
        truth.append(topic)
    return out, truth


def label_studio_version() -> str:
    pattern = ".venv-labelstudio/lib/python*/site-packages/label_studio-*.dist-info"
    found = sorted(ROOT.glob(pattern))
    return found[-1].name.removesuffix(".dist-info").split("-")[1] if found else "unknown"


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 tasks a push")
    args = parser.parse_args()
    n = 1_000 if args.quick else 10_000
    if not LABEL_STUDIO.exists():
        raise SystemExit(f"Label Studio is not installed at {LABEL_STUDIO}: run `make setup`")

    train, truth = rows(TRAIN_ROWS, 1, "t")
    first, fit_s = timed(model.fit, [r["text"] for r in train], truth, "bench-v1")
    second = model.fit([r["text"] for r in train[:300]], truth[:300], "bench-v2")
    pool, _ = rows(2 * n, 2, "r")

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        server = LabelStudioServer(
            executable=str(LABEL_STUDIO),
            data_dir=Path(tmp) / "ls",
            port=free_port(),
            username="bench@harvest.test",
            password=secrets.token_hex(8),
            token=secrets.token_hex(20),
        )
        print(f"starting Label Studio on {server.url} (first start migrates, ~1 min)", flush=True)
        _, start_s = timed(server.start, 600)
        try:
            sync = LabelSync(server.url, server.token, Lake(Path(tmp) / "lake"))
            peer_project = sync.project("bench plain push", CLASSES)
            peer, peer_s = timed(sync.push, peer_project, pool[:n])
            project = sync.project("bench push", CLASSES)
            _, e_s = timed(features.vectors, [r["text"] for r in pool])
            b, b_s = timed(push.push, sync, project, pool, first, "least_confidence", n)
            c, c_s = timed(push.refresh, sync, project, second)
            d, d_s = timed(push.push, sync, project, pool, second, "least_confidence", n)
            tasks = sync.task_row_ids(project)
        finally:
            server.stop()

    assert peer.imported == b.imported == c.tasks == d.imported == n, (peer, b, c, d)
    assert len(tasks) == 2 * n and d.refreshed == 0, (len(tasks), d)
    figures = {
        "a_plain_push": {
            "tasks": peer.imported,
            "seconds": peer_s,
            "predictions": False,
            "per_request": 500,
        },
        "e_encode_pool_once": {
            "tasks": len(pool),
            "seconds": e_s,
            "encoder": "all-MiniLM-L6-v2",
            "threads": torch.get_num_threads(),
        },
        "b_push_with_predictions": {
            "tasks": b.imported,
            "pool": len(pool),
            "seconds": b_s,
            "strategy": b.strategy,
            "per_request": push.CHUNK,
        },
        "c_refresh": {"tasks": c.tasks, "seconds": c_s},
        "d_next_batch": {"tasks": d.imported, "skipped": d.skipped, "seconds": d_s},
    }
    for name, row in figures.items():
        print(
            f"{name:>24}: {row['tasks']:>6} rows in {row['seconds']:6.2f} s  "
            f"({row['tasks'] / row['seconds']:,.0f}/s)"
        )
    print(f"model fit on {TRAIN_ROWS} rows: {fit_s} s; Label Studio start: {start_s} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": machine(
                    {
                        "label-studio": label_studio_version(),
                        "label-studio-sdk": version("label-studio-sdk"),
                        "scikit-learn": version("scikit-learn"),
                    }
                ),
                "tasks_per_push": n,
                "model_features": first.features,
                "model_fit_seconds": fit_s,
                "label_studio_start_seconds": start_s,
                "rows": figures,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
