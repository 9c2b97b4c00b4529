"""The report folder of a run: ``metrics.json`` (the whole summary), ``report.md`` (the
headline figures) and ``report.html`` (every table, with the plots inlined so the one
file can be mailed or attached)."""

from __future__ import annotations

import base64
import json
import math
from html import escape
from pathlib import Path
from typing import Any

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


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def model_line(summary: dict[str, Any]) -> str:
    config = summary.get("config", {})
    if summary.get("model") == "embedding":
        how = "fine-tuned encoder" if summary.get("finetuned") else "frozen encoder"
        return f"sentence embeddings (all-MiniLM-L6-v2, {how}) with a trained head"
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
        f"Test split: {test['n']} rows, accuracy {test['accuracy']:.3f}, "
        f"macro F1 {test['macro_f1']:.3f}.",
    ]
    if summary.get("baseline"):
        b = summary["baseline"]["test"]
        lines += ["", f"Baseline (TF-IDF + logistic regression), same split: accuracy "
                      f"{b['accuracy']:.3f}, macro F1 {b['macro_f1']:.3f}."]  # fmt: skip
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


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _image(folder: Path, name: str, caption: str) -> str:
    path = folder / name
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")  # fmt: skip


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
    base = summary.get("baseline") or {}
    btest = base.get("test") or {}
    title = f"Model report: dataset {summary['dataset']} version {summary['dataset_version']}"
    run = [
        ["model", escape(model_line(summary))],
        ["device", escape(f"{summary['device']} ({summary.get('precision', 'float32')}), "
                          f"{summary.get('world_size', 1)} process(es)")],  # fmt: skip
        ["epochs", escape(epochs_line(summary))],
        ["training speed", escape(f"{fmt(summary.get('train_samples_per_s'), 0)} rows/s, "
                                  f"{fmt(summary.get('train_seconds'), 1)} s of training")],
        ["rows", escape(", ".join(f"{k} {v}" for k, v in summary["rows"].items()))],
        ["checkpoint", escape(str(summary.get("checkpoint_dir") or "-"))],
        ["lineage", escape(", ".join(f"{t} v{v}" for t, v in summary.get("lineage", {}).items())
                           or "-")],
    ]  # fmt: skip
    compare = []
    for key, name, higher in HEADLINE:
        a, b = test.get(key), btest.get(key)
        diff = "-"
        if isinstance(a, float) and isinstance(b, float):
            d = a - b
            better = d > 0 if higher else d < 0
            diff = f'<span class="{"up" if better else "down"}">{d:+.3f}</span>'
        compare.append([escape(name), fmt(a), fmt(b), diff])
    per_class = [
        [escape(c), fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"]), fmt(v.get("roc_auc")),
         fmt(btest.get("per_class", {}).get(c, {}).get("f1")), str(v["support"])]
        for c, v in test["per_class"].items()
    ]  # fmt: skip
    history = [
        [str(h["epoch"]), fmt(h["train_loss"], 4), fmt(h["val_loss"], 4), fmt(h["val_accuracy"]),
         fmt(h["val_macro_f1"]), f"{h['lr']:.2e}", fmt(h["seconds"], 1), fmt(h["samples_per_s"], 0)]
        for h in summary["history"]
    ]  # fmt: skip
    parts = [
        f"<h1>{escape(title)}</h1>",
        "<h2>Run</h2>",
        _table(["", ""], run),
        "<h2>Test split: model against the baseline</h2>",
        "<p>The baseline is TF-IDF (word 1-2 grams) with logistic regression, trained in the "
        "same run on the same training rows; both are scored on the same test rows.</p>",
        _table(["metric", "model", "baseline", "model - baseline"], compare),
        "<h2>Per class (test split)</h2>",
        _table(
            ["class", "precision", "recall", "F1", "ROC AUC", "baseline F1", "support"], per_class
        ),  # fmt: skip
    ]
    cv = summary.get("cv")
    if cv:
        rows = []
        for who in ("model", "baseline"):
            if cv.get(who):
                rows.append([who] + [
                    f"{cv[who][m]['mean']:.3f} ± {cv[who][m]['std']:.3f}"
                    for m in ("accuracy", "macro_f1")
                ])  # fmt: skip
        parts += [
            f"<h2>Stratified {cv['folds']}-fold cross-validation</h2>",
            f"<p>Over the {cv['rows']} train and validation rows; mean ± standard deviation "
            "over the folds.</p>",
            _table(["", "accuracy", "macro F1"], rows),
        ]
    parts += ["<h2>Plots</h2>", *(_image(folder, n, c) for n, c in PLOTS)]
    parts += [
        "<h2>Epochs</h2>",
        _table(
            [
                "epoch",
                "train loss",
                "val loss",
                "val accuracy",
                "val macro F1",
                "lr",
                "s",
                "rows/s",
            ],
            history,
        ),  # fmt: skip
    ]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:left}th{background:#f3f3f3}.up{color:#080}.down{color:#b00}"
        "figure{display:inline-block;margin:0 1em 1em 0}img{max-width:460px}"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_report(folder: Path, summary: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    (folder / "report.md").write_text(markdown(summary))
    (folder / "report.html").write_text(html(folder, summary))
