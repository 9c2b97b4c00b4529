"""Fits a classifier on the train split, keeping the epoch that scores best on validation.

One loop for every model: the device is chosen (CUDA, then CPU) or named; mixed
precision on CUDA (bfloat16 where the card has it, else float16 with loss scaling); a
learning-rate schedule with warmup; early stopping on validation macro F1; a checkpoint
after every epoch that a later call resumes exactly; several processes under
``torchrun`` (see ``training.distributed``). On the CPU two runs with the same seed give
the same weights, and so does a run stopped and resumed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ingestion.errors import InvalidInputError
from training import checkpoint, distributed
from training.arrays import Floats
from training.evaluate import log_loss, macro_f1
from training.model import Inputs, ModelConfig, NgramClassifier, TextClassifier

if TYPE_CHECKING:
    from training.linear import LinearClassifier

log = logging.getLogger(__name__)

MODELS = ("ngram", "embedding", "tfidf-logreg", "tfidf-minilm-logreg")  # see training.linear
LINEAR = MODELS[2:]
SCHEDULES = ("linear", "cosine", "constant")
# Adagrad on hashed n-grams: sparse updates touch only the rows a batch uses (a dense
# optimiser rewrites all 16M weights every step) and per-weight rates suit rare n-grams;
# a head on fixed embeddings and a pretrained encoder (gently) use AdamW
DEFAULT_LR = {"ngram": 0.1, "embedding": 1e-3, "finetune": 3e-5}
HEAD_LR = 1e-3


class TrainError(InvalidInputError):
    pass


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"--device {requested} asked for, but torch sees no CUDA device")
    return requested


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float | None = None  # None: DEFAULT_LR of the model
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    # auto (training.select: every candidate, the best on validation), or one of MODELS
    model: str = "auto"
    patience: int = 5  # epochs without a better validation macro F1 before stopping; 0: never
    schedule: str = "linear"  # after warmup: linear decay to 0, cosine, or constant
    warmup: float = 0.05  # share of all steps spent ramping the rate up
    amp: bool = True  # mixed precision, on CUDA only
    finetune: bool | None = None  # embedding model: train the encoder too; None: on CUDA
    checkpoint_dir: str | None = None  # None: no checkpoints
    resume: bool = False  # continue from checkpoint_dir's last epoch when there is one
    stop_after: int = 0  # end this call after so many epochs, as an interruption would
    progress: bool = True  # bars on stderr, when it is a terminal
    buckets: int = 1 << 18  # n-gram model
    dim: int = 64
    ngrams: int = 2
    hidden: int = 256  # embedding model's head; 0: linear
    dropout: float = 0.1
    l2: float | None = None  # linear models' inverse regularisation C; None: each one's own
    max_length: int = 128  # tokens a text the encoder reads
    embedding_cache: str | None = None  # folder keeping frozen embeddings between runs
    baseline: bool = True  # train_and_evaluate: fit the TF-IDF baseline beside the model
    folds: int = 0  # train_and_evaluate: k-fold cross-validation as well, when 2 or more


@dataclass
class FitResult:
    model: TextClassifier | LinearClassifier
    best_epoch: int
    best_val_f1: float
    history: list[dict[str, float]]
    device: str
    epochs_run: int = 0
    stopped_early: bool = False
    interrupted: bool = False
    resumed_from: int = 0
    samples_per_s: float = 0.0  # training rows a second, all processes, this call's epochs
    train_seconds: float = 0.0
    world_size: int = 1
    finetuned: bool = False
    precision: str = "float32"
    checkpoint: str | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(config: TrainConfig, classes: list[str], finetune: bool = False) -> TextClassifier:
    if config.model == "ngram":
        return NgramClassifier(
            ModelConfig(
                classes=tuple(classes), buckets=config.buckets, dim=config.dim, ngrams=config.ngrams
            )
        )
    if config.model == "embedding":
        from training.embedding import EmbeddingClassifier, EmbeddingConfig

        return EmbeddingClassifier(
            EmbeddingConfig(
                classes=tuple(classes),
                hidden=config.hidden,
                dropout=config.dropout,
                finetune=finetune,
                max_length=config.max_length,
            ),
            cache_dir=config.embedding_cache,
        )
    raise TrainError(f"unknown model {config.model!r}; one of {', '.join(MODELS)}")


def amp_dtype(device: str, enabled: bool) -> torch.dtype | None:
    if not (enabled and device.startswith("cuda")):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def predict_inputs(
    model: nn.Module, inputs: Inputs, batch_size: int = 256, dtype: torch.dtype | None = None
) -> Floats:
    device = str(next(model.parameters()).device)
    model.eval()
    out = []
    with torch.no_grad(), autocast(device, dtype):
        for start in range(0, len(inputs), batch_size):
            index = list(range(start, min(start + batch_size, len(inputs))))
            logits = model(*inputs.batch(index, device)).float()
            out.append(torch.softmax(logits, dim=1).cpu().numpy())
    n = len(getattr(model, "classes", ()))
    return np.concatenate(out) if out else np.zeros((0, n))


def predict(
    model: TextClassifier | LinearClassifier, texts: list[str], batch_size: int = 256
) -> Floats:
    """Class probabilities, one row per text."""
    if not isinstance(model, TextClassifier):
        return model.predict_proba(texts)
    device = str(next(model.parameters()).device)
    return predict_inputs(model, model.inputs(texts), batch_size, amp_dtype(device, True))


def schedule_factor(config: TrainConfig, total: int) -> Callable[[int], float]:
    if config.schedule not in SCHEDULES:
        raise TrainError(f"unknown schedule {config.schedule!r}; one of {', '.join(SCHEDULES)}")
    warm = int(config.warmup * total)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if config.schedule == "constant":
            return 1.0
        done = min(1.0, (step - warm) / max(1, total - warm))
        if config.schedule == "linear":
            return 1.0 - done
        return 0.5 * (1.0 + math.cos(math.pi * done))

    return factor


def optimiser_for(
    model: TextClassifier, config: TrainConfig, finetune: bool
) -> torch.optim.Optimizer:
    if config.model == "ngram":
        lr = config.lr if config.lr is not None else DEFAULT_LR["ngram"]
        return torch.optim.Adagrad(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    head = list(model.head.parameters())  # type: ignore[union-attr]
    if not finetune:
        lr = config.lr if config.lr is not None else DEFAULT_LR["embedding"]
        return torch.optim.AdamW(head, lr=lr, weight_decay=config.weight_decay)
    lr = config.lr if config.lr is not None else DEFAULT_LR["finetune"]
    encoder = list(model.encoder.parameters())  # type: ignore[union-attr]
    return torch.optim.AdamW(
        [{"params": encoder, "lr": lr}, {"params": head, "lr": max(lr, HEAD_LR)}],
        weight_decay=config.weight_decay,
    )


class Display:
    """A bar per epoch with the running loss, then one line of validation figures; on stderr
    when it is a terminal and on this process is rank 0, else the line goes to the log."""

    def __init__(self, enabled: bool, epochs: int):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal and sys.stderr.isatty()
        self.epochs = epochs

    @contextlib.contextmanager
    def epoch(self, epoch: int, steps: int) -> Iterator[Callable[[float], None]]:
        if not self.enabled:
            yield lambda loss: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("loss {task.fields[loss]}"),
        )
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(f"epoch {epoch}/{self.epochs}", total=steps, loss="-")
            yield lambda loss: bar.update(task, advance=1, loss=f"{loss:.4f}")

    def summary(self, row: dict[str, float]) -> None:
        line = (
            f"epoch {int(row['epoch'])}/{self.epochs}  train loss {row['train_loss']:.4f}  "
            f"val loss {row['val_loss']:.4f}  val acc {row['val_accuracy']:.4f}  "
            f"val macro F1 {row['val_macro_f1']:.4f}  lr {row['lr']:.2e}  "
            f"{row['seconds']:.1f} s  {row['samples_per_s']:.0f} rows/s"
        )
        if self.enabled:
            self.console.print(line, highlight=False)
        else:
            log.info(line)


def fingerprint(
    config: TrainConfig, classes: list[str], rows: int, world: int, finetune: bool
) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed."""
    keep = (
        "model",
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "seed",
        "schedule",
        "warmup",
        "buckets",
        "dim",
        "ngrams",
        "hidden",
        "dropout",
        "max_length",
    )
    settings = asdict(config)
    return {
        **{k: settings[k] for k in keep},
        "classes": list(classes),
        "train_rows": rows,
        "world_size": world,
        "finetune": finetune,
    }


def fit_linear(
    train: tuple[list[str], list[str]],
    validation: tuple[list[str], list[str]],
    classes: list[str],
    config: TrainConfig,
) -> FitResult:
    """A linear model (``training.linear``): one fit, with no epochs, scored on validation
    as an epoch of the torch models is."""
    from training import linear

    model, seconds = linear.fit_linear(config.model, train, classes, config.seed, config.l2)
    index = {c: i for i, c in enumerate(classes)}
    y_val = [index[label] for label in validation[1]]
    probs = model.predict_proba(validation[0])
    picked = probs.argmax(axis=1)
    y_train = [index[label] for label in train[1]]
    row = {
        "epoch": 1,
        "train_loss": log_loss(y_train, model.predict_proba(train[0])),
        "val_loss": log_loss(y_val, probs),
        "val_accuracy": float((picked == np.asarray(y_val)).mean()) if y_val else 0.0,
        "val_macro_f1": macro_f1(y_val, picked.tolist(), len(classes)),
        "seconds": seconds,
        "samples_per_s": len(train[0]) / seconds if seconds else 0.0,
    }
    return FitResult(
        model=model,
        best_epoch=1,
        best_val_f1=row["val_macro_f1"],
        history=[row],
        device="cpu",
        epochs_run=1,
        samples_per_s=row["samples_per_s"],
        train_seconds=seconds,
    )


def fit(
    train: tuple[list[str], list[str]],
    validation: tuple[list[str], list[str]],
    classes: list[str],
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    if config.model not in MODELS:
        # "auto" included: training.run fits each candidate through here
        raise TrainError(f"unknown model {config.model!r}; one of {', '.join(MODELS)}")
    if config.model in LINEAR:
        return fit_linear(train, validation, classes, config)
    if config.resume and not config.checkpoint_dir:
        raise TrainError("resume needs a checkpoint folder")
    device = pick_device(config.device)
    is_ddp = distributed.init(device.split(":")[0])
    rank, world = distributed.rank(), distributed.size()
    if is_ddp and device == "cuda":
        device = f"cuda:{distributed.world()[2]}"
        torch.cuda.set_device(device)
    seed_everything(config.seed)
    finetune = config.model == "embedding" and (
        config.finetune if config.finetune is not None else device.startswith("cuda")
    )
    bare = build_model(config, classes, finetune).to(device)
    index = {c: i for i, c in enumerate(classes)}
    texts, labels = train
    y = torch.tensor([index[label] for label in labels], dtype=torch.long)
    y_val = [index[label] for label in validation[1]]
    train_inputs = bare.inputs(texts)
    val_inputs = bare.inputs(validation[0])

    if isinstance(bare, NgramClassifier):
        # Adagrad takes sparse gradients except with weight decay; NCCL cannot reduce them
        bare.embedding.sparse = not is_ddp and not config.weight_decay
        # torch's default, made explicit, which also stops its warning on every step
        torch.sparse.check_sparse_tensor_invariants.disable()  # type: ignore[no-untyped-call]
    model: nn.Module = bare
    if is_ddp:
        from torch.nn.parallel import DistributedDataParallel

        local = [distributed.world()[2]] if device.startswith("cuda") else None
        model = DistributedDataParallel(bare, device_ids=local)
    optimiser = optimiser_for(bare, config, finetune)
    steps = -(-len(distributed.shard(list(range(len(texts))), 0, world)) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, schedule_factor(config, max(1, steps * config.epochs))
    )
    dtype = amp_dtype(device, config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(config.seed)

    display = Display(config.progress and rank == 0, config.epochs)
    fp = fingerprint(config, classes, len(texts), world, finetune)
    history: list[dict[str, float]] = []
    best_f1, best_epoch, since_best = -1.0, 0, 0
    best_state: dict[str, torch.Tensor] = {}
    start, done = 0, False
    folder = config.checkpoint_dir
    loaded = checkpoint.load(folder) if folder and config.resume else None
    if loaded is not None:
        last, best_state = loaded
        differ = {
            k: (last["fingerprint"].get(k), v)
            for k, v in fp.items()
            if last["fingerprint"].get(k) != v
        }
        if differ:
            what = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differ.items())
            raise TrainError(f"checkpoint in {folder} is from other settings ({what})")
        bare.load_state_dict(last["model"])
        optimiser.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        scaler.load_state_dict(last["scaler"])
        checkpoint.set_rng_state(last["rng"], gen)
        history = list(last["history"])
        best_f1, best_epoch, since_best = last["best_f1"], last["best_epoch"], last["since_best"]
        start, done = last["epoch"], last["done"]
        log.info("resuming from %s after epoch %s", folder, start)
    elif folder and config.resume:
        log.info("no checkpoint in %s yet: starting from epoch 1", folder)

    ran, seen_total, train_seconds = 0, 0, 0.0
    stopped_early = bool(loaded and loaded[0]["stopped_early"])
    interrupted = False
    epoch = start
    while not done and epoch < config.epochs:
        epoch += 1
        model.train()
        order = torch.randperm(len(texts), generator=gen).tolist()
        mine = distributed.shard(order, rank, world)
        batches = [mine[i : i + config.batch_size] for i in range(0, len(mine), config.batch_size)]
        running = torch.zeros((), dtype=torch.float64, device=device)
        started = time.perf_counter()
        with display.epoch(epoch, len(batches)) as advance:
            for batch in batches:
                inputs = train_inputs.batch(batch, device)
                target = y[torch.as_tensor(batch)].to(device)
                optimiser.zero_grad(set_to_none=True)
                with autocast(device, dtype):
                    logits = model(*inputs)
                loss = loss_fn(logits.float(), target)
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
                scheduler.step()
                running += loss.detach() * len(batch)
                if display.enabled:
                    advance(loss.item())
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        total, seen = distributed.all_sum([float(running), float(len(mine))], device)
        seen_total += int(seen)
        train_seconds += seconds
        row: dict[str, float] | None = None
        if rank == 0:
            probs = predict_inputs(bare, val_inputs, dtype=dtype)
            row = {
                "epoch": epoch,
                "train_loss": total / max(1.0, seen),
                "val_loss": log_loss(y_val, probs),
                "val_accuracy": float((probs.argmax(axis=1) == np.asarray(y_val)).mean())
                if y_val
                else 0.0,
                "val_macro_f1": macro_f1(y_val, probs.argmax(axis=1).tolist(), len(classes)),
                "lr": optimiser.param_groups[0]["lr"],
                "seconds": seconds,
                "samples_per_s": seen / seconds if seconds else 0.0,
            }
        row = distributed.broadcast(row)
        assert row is not None
        history.append(row)
        ran += 1
        if row["val_macro_f1"] > best_f1:
            best_f1, best_epoch, since_best = row["val_macro_f1"], epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in bare.state_dict().items()}
            improved = True
        else:
            since_best += 1
            improved = False
        stopped_early = bool(config.patience) and since_best >= config.patience
        done = stopped_early or epoch >= config.epochs
        display.summary(row)
        if on_epoch and rank == 0:
            on_epoch(row)
        if folder and rank == 0:
            checkpoint.save(
                folder,
                {
                    "format": 1,
                    "fingerprint": fp,
                    "epoch": epoch,
                    "done": done,
                    "model": bare.state_dict(),
                    "optimizer": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": checkpoint.rng_state(gen),
                    "history": history,
                    "best_f1": best_f1,
                    "best_epoch": best_epoch,
                    "since_best": since_best,
                    "stopped_early": stopped_early,
                },
                best_state if improved else None,
            )
        distributed.barrier()
        if stopped_early:
            log.info(
                "early stop after epoch %s: no better validation macro F1 for %s epochs",
                epoch,
                config.patience,
            )
        if not done and config.stop_after and ran >= config.stop_after:
            interrupted = True
            break
    if best_state:
        bare.load_state_dict(best_state)
    bare.eval()
    return FitResult(
        model=bare,
        best_epoch=best_epoch,
        best_val_f1=best_f1,
        history=history,
        device=device,
        epochs_run=len(history),
        stopped_early=stopped_early,
        interrupted=interrupted,
        resumed_from=start,
        samples_per_s=seen_total / train_seconds if train_seconds else 0.0,
        train_seconds=train_seconds,
        world_size=world,
        finetuned=finetune,
        precision=str(dtype).removeprefix("torch.") if dtype else "float32",
        checkpoint=str(folder) if folder else None,
    )
