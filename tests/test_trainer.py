"""The trainer: seeds, checkpoints and resume, early stopping, schedule, several processes,
and the sentence-embedding model loaded from its package alone."""

from __future__ import annotations

import csv
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harvest.demosite import generate
from training.model import load_model
from training.trainer import (
    Display,
    FitResult,
    TrainConfig,
    TrainError,
    fit,
    predict,
    schedule_factor,
)

TIMING = ("seconds", "samples_per_s")


def splits(n: int = 120, seed: int = 5) -> tuple[Any, Any, list[str]]:
    articles = [a for a in generate(n + 20, seed=seed).articles if not a.planted][:n]
    texts = [a.title + ". " + " ".join(a.paragraphs) for a in articles]
    labels = [a.label for a in articles]
    cut = n * 3 // 4
    return (texts[:cut], labels[:cut]), (texts[cut:], labels[cut:]), sorted(set(labels))


SMALL = TrainConfig(
    model="ngram",
    epochs=4,
    batch_size=16,
    device="cpu",
    buckets=1 << 14,
    dim=32,
    patience=0,
    progress=False,
)


def state(result: FitResult) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in result.model.state_dict().items()}


def same_run(a: FitResult, b: FitResult) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    strip = [{k: v for k, v in h.items() if k not in TIMING} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k not in TIMING} for h in b.history]
    assert (a.best_epoch, a.best_val_f1) == (b.best_epoch, b.best_val_f1)


def test_same_seed_same_model_and_another_seed_another() -> None:
    train, val, classes = splits()
    first = fit(train, val, classes, SMALL)
    same_run(first, fit(train, val, classes, SMALL))
    other = fit(train, val, classes, replace(SMALL, seed=1))
    assert not torch.equal(state(first)["embedding.weight"], state(other)["embedding.weight"])
    assert first.best_val_f1 > 0.5  # four classes: chance is 0.25
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]


def test_stopped_then_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    train, val, classes = splits()
    whole = fit(train, val, classes, SMALL)
    config = replace(SMALL, checkpoint_dir=str(tmp_path / "ck"))
    stopped = fit(train, val, classes, replace(config, stop_after=2))
    assert stopped.interrupted and stopped.epochs_run == 2
    assert (tmp_path / "ck" / "last.pt").exists() and (tmp_path / "ck" / "best.pt").exists()
    resumed = fit(train, val, classes, replace(config, resume=True))
    assert resumed.resumed_from == 2 and not resumed.interrupted and resumed.epochs_run == 4
    same_run(whole, resumed)
    # resuming a finished run trains nothing and gives the same model back
    again = fit(train, val, classes, replace(config, resume=True))
    assert again.resumed_from == 4 and again.train_seconds == 0
    same_run(whole, again)


def test_a_checkpoint_from_other_settings_is_refused(tmp_path: Path) -> None:
    train, val, classes = splits(60)
    config = replace(SMALL, epochs=2, checkpoint_dir=str(tmp_path))
    fit(train, val, classes, replace(config, stop_after=1))
    with pytest.raises(TrainError, match=r"other settings \(batch_size: checkpoint 16, now 8\)"):
        fit(train, val, classes, replace(config, batch_size=8, resume=True))
    with pytest.raises(TrainError, match="resume needs a checkpoint folder"):
        fit(train, val, classes, replace(SMALL, resume=True))


def test_early_stopping_keeps_the_best_epoch() -> None:
    train, val, classes = splits(60)
    # a rate of 0 never improves on the first epoch
    result = fit(train, val, classes, replace(SMALL, epochs=10, lr=0.0, patience=2))
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_schedule_warms_up_then_decays() -> None:
    linear = schedule_factor(TrainConfig(schedule="linear", warmup=0.1), 100)
    assert [round(linear(s), 3) for s in (0, 9, 10, 55, 100)] == [0.091, 0.909, 1.0, 0.5, 0.0]
    cosine = schedule_factor(TrainConfig(schedule="cosine", warmup=0.0), 100)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == 0.0
    assert schedule_factor(TrainConfig(schedule="constant", warmup=0.0), 10)(9) == 1.0
    with pytest.raises(TrainError, match="unknown schedule"):
        schedule_factor(TrainConfig(schedule="steps"), 10)
    train, val, classes = splits(60)
    lrs = [h["lr"] for h in fit(train, val, classes, SMALL).history]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == 0.0


def test_progress_bars_stay_off_without_a_terminal() -> None:
    assert not Display(True, 3).enabled  # pytest captures stderr: not a TTY


def test_saved_model_predicts_the_same(tmp_path: Path) -> None:
    train, val, classes = splits(60)
    result = fit(train, val, classes, SMALL)
    result.model.save(str(tmp_path / "m.pt"))
    back = load_model(str(tmp_path / "m.pt"))
    p = predict(back, val[0])
    assert np.array_equal(p, predict(result.model, val[0]))
    assert np.allclose(p.sum(axis=1), 1.0)


# --- several processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, out: str, config: TrainConfig) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
        }
    )
    import torch.distributed as dist

    train, val, classes = splits(96)
    result = fit((train[0][:64], train[1][:64]), val, classes, config)
    torch.save(
        {"state": state(result), "world": result.world_size, "history": result.history},
        f"{out}/rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_two_processes_with_gloo_match_one_with_twice_the_batch(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    config = replace(SMALL, epochs=3, batch_size=8)
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path), config), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    for k in ranks[0]["state"]:
        assert torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]), k
    # each step's global batch is the single process's batch of 16 rows, in the same order
    train, val, classes = splits(96)
    single = fit((train[0][:64], train[1][:64]), val, classes, replace(config, batch_size=16))
    for k, v in state(single).items():
        assert torch.allclose(ranks[0]["state"][k], v, atol=1e-5), k
    assert [h["val_macro_f1"] for h in ranks[0]["history"]] == [
        h["val_macro_f1"] for h in single.history
    ]


# --- the sentence-embedding model


def test_embeddings_match_sentence_transformers_offline() -> None:
    from sentence_transformers import SentenceTransformer

    from training.embedding import EmbeddingCache, embed, encoder_dir

    texts = ["Stocks rallied on Wall Street.", "The striker scored twice in the final.", ""]
    ours = embed(texts, cache=EmbeddingCache())
    assert ours.shape == (3, 384) and torch.allclose(ours.norm(dim=1), torch.ones(3), atol=1e-5)
    theirs = SentenceTransformer(str(encoder_dir()), device="cpu", local_files_only=True).encode(
        texts, convert_to_tensor=True
    )
    assert torch.allclose(ours, theirs.cpu(), atol=1e-5)
    assert "HF_HUB_OFFLINE" in os.environ  # set before transformers reads its settings


def test_embedding_cache_file_is_reused(tmp_path: Path) -> None:
    from training.embedding import EmbeddingCache, embed

    texts = ["one short text", "another short text", "one short text"]
    first = embed(texts, cache=EmbeddingCache(tmp_path))
    assert (tmp_path / "all-MiniLM-L6-v2.npz").exists()
    cache = EmbeddingCache(tmp_path)
    assert len(cache.vectors) == 2
    assert torch.equal(embed(texts, cache=cache), first)


EMBEDDING = replace(SMALL, model="embedding", hidden=32, epochs=4, batch_size=8)


def test_embedding_head_is_seeded_and_resumes_exactly(tmp_path: Path) -> None:
    train, val, classes = splits(60)
    whole = fit(train, val, classes, EMBEDDING)
    assert not whole.finetuned and whole.model.encoder is None  # type: ignore[attr-defined]
    same_run(whole, fit(train, val, classes, EMBEDDING))
    config = replace(EMBEDDING, checkpoint_dir=str(tmp_path))
    fit(train, val, classes, replace(config, stop_after=3))
    same_run(whole, fit(train, val, classes, replace(config, resume=True)))
    assert whole.history[-1]["train_loss"] < whole.history[0]["train_loss"]


def test_fine_tuning_trains_the_encoder(tmp_path: Path) -> None:
    from training.embedding import load_bert

    train, val, classes = splits(24)
    config = replace(EMBEDDING, epochs=1, finetune=True, max_length=24, warmup=0.0)
    result = fit(train, val, classes, config)
    assert result.finetuned
    before = load_bert().state_dict()
    after = result.model.encoder.bert.state_dict()  # type: ignore[attr-defined]
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], after[key].cpu())
    result.model.save(str(tmp_path / "m.pt"))
    back = load_model(str(tmp_path / "m.pt"))
    assert np.allclose(predict(back, val[0]), predict(result.model, val[0]), atol=1e-6)


def test_embedding_model_learns_ag_news(ag_news: Path) -> None:
    with ag_news.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(rows))[:360]
    texts = [rows[i][1] + ". " + rows[i][2].replace("\\", " ") for i in pick]
    labels = [rows[i][0] for i in pick]
    classes = sorted(set(labels))
    train, val, test = slice(0, 200), slice(200, 260), slice(260, 360)
    config = replace(SMALL, model="embedding", epochs=30, patience=5, batch_size=16)
    result = fit((texts[train], labels[train]), (texts[val], labels[val]), classes, config)
    probs = predict(result.model, texts[test])
    index = {c: i for i, c in enumerate(classes)}
    accuracy = float((probs.argmax(axis=1) == [index[x] for x in labels[test]]).mean())
    assert accuracy > 0.75  # four balanced classes, 200 labels


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_on_cuda() -> None:
    train, val, classes = splits(60)
    result = fit(train, val, classes, replace(SMALL, device="cuda"))
    assert result.device.startswith("cuda") and result.precision in ("bfloat16", "float16")
    assert result.best_val_f1 > 0.5


def test_gpu_check_without_cuda_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: gpu-check needs a CUDA GPU") and "sees none" in err
