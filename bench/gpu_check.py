"""GPU check: both models trained on AG News on the CUDA GPU, against the CPU.

    python -m bench.gpu_check                 # make gpu-check; about 2-4 minutes
    python -m bench.gpu_check --rehearse      # the same steps, small, on the CPU (no GPU)

For each model (the hashed n-gram bag; all-MiniLM-L6-v2 fine-tuned with its head, which
is what the trainer does on CUDA; and the frozen encoder with a trained head), it trains
on the GPU with mixed precision and prints training samples/s, seconds per epoch, GPU
utilisation (mean and peak, sampled with nvidia-smi every 0.25 s) and memory (torch's
peak allocation and nvidia-smi's peak use), then times the same training on the CPU: a
whole epoch for the n-gram model and the head, and for fine-tuning ``--cpu-rows`` rows
scaled to a whole epoch (marked as estimated). A time budget (``--budget``, 270 s by
default) skips what is left rather than overrun 5 minutes. Without CUDA it prints one
``error:`` line and exits 2. Figures go to ``bench/results/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench.train import CORPUS, Split, load, take
from ingestion.datasets import stratified_split
from training.evaluate import evaluate
from training.trainer import TrainConfig, fit, predict

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "gpu_check.json"
CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
MODELS = {
    "ngram": TrainConfig(model="ngram", epochs=3, batch_size=64, patience=0, progress=False),
    "embedding, fine-tuned": TrainConfig(
        model="embedding", finetune=True, epochs=2, batch_size=32, patience=0, progress=False
    ),
    "embedding, frozen encoder": TrainConfig(
        model="embedding", finetune=False, epochs=10, batch_size=32, patience=0, progress=False
    ),
}


class GpuSampler(threading.Thread):
    """Utilisation (%) and memory used (MiB) of one GPU, from nvidia-smi, while it runs."""

    def __init__(self, device: str, period: float = 0.25):
        super().__init__(daemon=True)
        self.period = period
        self.samples: list[tuple[float, float]] = []
        self.halt = threading.Event()
        self.id = None
        if device.startswith("cuda") and shutil.which("nvidia-smi"):
            uuid = getattr(torch.cuda.get_device_properties(torch.device(device)), "uuid", None)
            self.id = f"GPU-{uuid}" if uuid else None
            if self.id is None or self.query() is None:
                # nvidia-smi numbers GPUs as the driver does; torch's first visible one
                visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
                self.id = visible or "0"

    def query(self) -> tuple[float, float] | None:
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    f"--id={self.id}",
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout
            util, used = out.strip().splitlines()[0].split(",")
            return float(util), float(used)
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def run(self) -> None:
        if self.id is None:
            return
        while not self.halt.is_set():
            got = self.query()
            if got:
                self.samples.append(got)
            self.halt.wait(self.period)

    def summary(self) -> dict[str, Any]:
        self.halt.set()
        self.join(timeout=10)
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_used_max_mib": None}
        util = [u for u, _ in self.samples]
        return {
            "gpu_util_mean": round(sum(util) / len(util), 1),
            "gpu_util_max": max(util),
            "gpu_mem_used_max_mib": max(m for _, m in self.samples),
            "samples": len(self.samples),
        }


def train_once(config: TrainConfig, train: Split, val: Split, test: Split | None) -> dict[str, Any]:
    device = config.device
    on_gpu = device.startswith("cuda")
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sampler = GpuSampler(device)
    sampler.start()
    started = time.perf_counter()
    result = fit(train, val, CLASSES, config)
    wall = time.perf_counter() - started
    out: dict[str, Any] = {
        "device": result.device,
        "precision": result.precision,
        "finetuned": result.finetuned,
        "train_rows": len(train[0]),
        "epochs": result.epochs_run,
        "seconds_per_epoch": round(result.train_seconds / max(1, result.epochs_run), 3),
        "train_samples_per_s": round(result.samples_per_s, 1),
        "wall_seconds": round(wall, 2),
        **sampler.summary(),
    }
    if on_gpu:
        out["torch_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        out["torch_peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20)
    if test is not None:
        m = evaluate(predict(result.model, test[0]), test[1], CLASSES)
        out.update(test_accuracy=round(m["accuracy"], 4), test_macro_f1=round(m["macro_f1"], 4))
    del result
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cpu-rows", type=int, default=512, help="rows the CPU fine-tunes on, scaled to an epoch"
    )
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for the whole check")
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="no GPU needed: the same steps on the CPU, on 200 rows",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if not args.rehearse and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        print(
            f"error: gpu-check needs a CUDA GPU, and torch {torch.__version__} ({build}) sees "
            "none; run it on a machine with an NVIDIA GPU and its driver",
            file=sys.stderr,
        )
        return 2
    if not CORPUS.exists():
        print(
            f"error: {CORPUS} is absent (the shared datasets are not on this machine)",
            file=sys.stderr,
        )
        return 2
    gpu = "cpu" if args.rehearse else "cuda"
    data = load(CORPUS)
    models = MODELS
    if args.rehearse:
        data = take(data, list(range(0, len(data[0]), len(data[0]) // 200))[:200])
        args.cpu_rows = min(args.cpu_rows, 32)
        models = {k: replace(c, epochs=1, max_length=32) for k, c in MODELS.items()}
    parts = stratified_split(data[1], (0.7, 0.15, 0.15), seed=0)
    idx = {s: [i for i, p in enumerate(parts) if p == s] for s in ("train", "validation", "test")}
    train, val, test = (take(data, idx[s]) for s in ("train", "validation", "test"))
    name = torch.cuda.get_device_name(0) if gpu == "cuda" else "none (rehearsal on the CPU)"
    report: dict[str, Any] = {
        "gpu": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "rows": {"train": len(train[0]), "validation": len(val[0]), "test": len(test[0])},
        "models": {},
        "skipped": [],
    }

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    from training.embedding import EmbeddingCache, embed

    say(
        f"GPU: {name}; AG News train {len(train[0])}, validation {len(val[0])}, test {len(test[0])}"
    )
    for label, config in models.items():
        row: dict[str, Any] = {}
        if left() < 20:
            report["skipped"].append(f"{label}: the time budget was spent")
            continue
        if not config.finetune and config.model == "embedding":
            # encoding is part of what the frozen model costs: timed once, on the GPU
            t = time.perf_counter()
            embed(train[0] + val[0] + test[0], gpu)
            row["encode_rows_per_s_gpu"] = round(len(data[0]) / (time.perf_counter() - t), 1)
            sample = train[0][:256]
            t = time.perf_counter()
            embed(sample, "cpu", cache=EmbeddingCache())
            row["encode_rows_per_s_cpu"] = round(len(sample) / (time.perf_counter() - t), 1)
        say(f"{label}: GPU")
        row["gpu"] = train_once(replace(config, device=gpu), train, val, test)
        if left() < 30:
            report["skipped"].append(f"{label} on the CPU: the time budget was spent")
        else:
            say(f"{label}: CPU")
            cpu = replace(config, device="cpu", epochs=1, finetune=config.finetune)
            subset = train
            if config.finetune:
                subset = (train[0][: args.cpu_rows], train[1][: args.cpu_rows])
            got = train_once(cpu, subset, (val[0][:64], val[1][:64]), None)
            scale = len(train[0]) / len(subset[0])
            got["seconds_per_epoch"] = round(got["seconds_per_epoch"] * scale, 3)
            got["estimated_from_rows"] = len(subset[0]) if scale != 1 else None
            row["cpu"] = got
            row["epoch_speedup"] = round(
                got["seconds_per_epoch"] / row["gpu"]["seconds_per_epoch"], 1
            )
        report["models"][label] = row
    report["seconds"] = round(time.perf_counter() - started, 1)

    print(
        f"\nGPU check: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"{report['seconds']} s in all\n"
    )
    print(
        "| model | samples/s GPU | s/epoch GPU | s/epoch CPU | speed-up | GPU util mean/max % "
        "| GPU mem peak MiB (torch / smi) | test macro F1 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, row in report["models"].items():
        g, c = row["gpu"], row.get("cpu") or {}
        est = " (est.)" if c.get("estimated_from_rows") else ""
        print(
            f"| {label} | {g['train_samples_per_s']:,.0f} | {g['seconds_per_epoch']} | "
            f"{c.get('seconds_per_epoch', '-')}{est} | {row.get('epoch_speedup', '-')}x | "
            f"{g['gpu_util_mean']}/{g['gpu_util_max']} | "
            f"{g.get('torch_peak_allocated_mib', '-')} / {g['gpu_mem_used_max_mib']} | "
            f"{g['test_macro_f1']} |"
        )
    for line in report["skipped"]:
        print(f"skipped: {line}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"results": str(args.out), "seconds": report["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
