"""Writes one dataset version as Parquet, one file per split, with a dataset card."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingestion.datasets import SPLITS, read_dataset
from ingestion.lake import Lake


def export_dataset(lake: Lake, name: str, out: str | Path, version: int | None = None) -> Path:
    data, meta = read_dataset(lake, name, version)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split in SPLITS:
        part = data.filter(pc.equal(data["split"], split))
        pq.write_table(part, out / f"{split}.parquet")
        counts[split] = part.num_rows
    (out / "README.md").write_text(card(name, meta, data, counts), encoding="utf-8")
    return out


def card(name: str, meta: dict[str, Any], data: Any, counts: dict[str, int]) -> str:
    labels = data["label"].to_pylist()
    splits = data["split"].to_pylist()
    by_label = Counter(labels)
    classes = sorted(by_label)
    lines = [
        f"# Dataset `{name}`, version {meta['version']}",
        "",
        f"{data.num_rows} labelled rows of text for classification into {len(classes)} classes.",
        "",
        "## Files",
        "",
        "| split | file | rows |",
        "| --- | --- | --- |",
        *(f"| {s} | `{s}.parquet` | {counts[s]} |" for s in SPLITS),
        "",
        "Columns: `row_id` (SHA-256 of the extracted content), `source`, `url`, `text`, "
        "`label`, `split`.",
        "",
        "## Label distribution",
        "",
        "| label | " + " | ".join(SPLITS) + " | total |",
        "| --- | " + " | ".join("---" for _ in SPLITS) + " | --- |",
    ]
    pair = Counter(zip(labels, splits, strict=True))
    for label in classes:
        cells = " | ".join(str(pair[(label, s)]) for s in SPLITS)
        lines.append(f"| {label} | {cells} | {by_label[label]} |")
    lines += [
        "",
        "## Sources",
        "",
        *(f"- `{src}`: {n} rows" for src, n in sorted(Counter(data["source"].to_pylist()).items())),
        "",
        "## Lineage",
        "",
        "Cut from these Delta table versions of the harvest lake:",
        "",
        *(f"- `{t}` version {v}" for t, v in sorted(meta.get("tables", {}).items())),
        "",
        f"Split: stratified by label, fractions {meta.get('fractions')}, seed {meta.get('seed')}.",
        "",
    ]
    return "\n".join(lines)
