"""Writes one dataset version as files anyone can load without this project.

Layout, the Hugging Face one, so ``datasets.load_dataset(DIR)`` and
``datasets.load_dataset("parquet", data_files=...)`` read it unchanged:

- data: one file per split (``train.parquet``), or with ``shards=K`` K files per split
  under ``data/`` (``data/train-00000-of-00002.parquet``), rows in the version's order;
  ``jsonl`` writes one JSON object a line instead of Parquet
- ``README.md``: the dataset card, with YAML front matter naming each split's files, then
  counts, label distribution, sources with licence and robots.txt notes, lake versions,
  split rules, leak check and validation results
- ``manifest.json``: every file's SHA-256, size and row count, and the version's lineage

The same version and options give byte-identical files. A folder is replaced whole, and
only when it is empty or holds an earlier export.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingestion.datasets import read_dataset
from ingestion.lake import Lake, LakeError
from ingestion.markdown import md_code, md_escape
from ingestion.runs import CURATE_STAGE, runs_of
from ingestion.split import SPLITS
from ingestion.ticker import Ticker

FORMATS = ("parquet", "jsonl")
CARD, MANIFEST, DATA = "README.md", "manifest.json", "data"
NOT_RECORDED = "not recorded"
_SHARD = re.compile(r"(train|validation|test)(-\d{5}-of-\d{5})?\.(parquet|jsonl)")


@dataclass
class SourceNotes:
    """What a source's recipe says about reusing what was crawled from it."""

    licence: str = NOT_RECORDED
    robots: str = NOT_RECORDED


@dataclass
class Export:
    out: Path
    files: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


def export_version(
    lake: Lake,
    name: str,
    out: str | Path,
    version: int | None = None,
    fmt: str = "parquet",
    shards: int | None = None,
    notes: dict[str, SourceNotes] | None = None,
) -> Export:
    """Writes dataset ``name`` at ``version`` (default: latest) into folder ``out``."""
    if fmt not in FORMATS:
        raise LakeError(f"export of {name!r}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    if shards is not None and shards < 1:
        raise LakeError(f"export of {name!r}: {shards} shards; give 1 or more")
    data, meta = read_dataset(lake, name, version)
    out = Path(out)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # written beside the target and moved in at the end: a failed export leaves no half
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)  # left by an export that was killed
    work.mkdir()
    try:
        files = _write_data(work, data, fmt, shards)
        sources = sorted(set(data["source"].to_pylist()))
        notes = {s: (notes or {}).get(s, SourceNotes()) for s in sources}
        validation = {s: validation_summary(lake, s, meta) for s in sources}
        text = card(name, meta, data, files, notes, validation)
        (work / CARD).write_text(text, encoding="utf-8")
        manifest = {
            "dataset": name,
            "version": meta["version"],
            "format": fmt,
            "shards": shards,
            "rows": data.num_rows,
            "splits": {s: sum(f["rows"] for f in files if f["split"] == s) for s in SPLITS},
            "files": files,
            "card": {"path": CARD, "sha256": _sha256(work / CARD)},
            "lineage": {k: v for k, v in meta.items() if k != "version"},
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Export(out, files, manifest)


def _check_target(out: Path) -> None:
    """``out`` may be replaced: it is absent, empty, or holds only what an export writes."""
    if not out.exists():
        return
    if not out.is_dir():
        raise LakeError(f"export target {out} is a file, not a folder")
    for entry in sorted(out.iterdir()):
        if entry.name in (CARD, MANIFEST) or _SHARD.fullmatch(entry.name):
            continue
        if entry.name == DATA and entry.is_dir():
            stray = [p for p in entry.iterdir() if not _SHARD.fullmatch(p.name)]
            if not stray:
                continue
            entry = stray[0]
        raise LakeError(
            f"export target {out} holds {entry}, which no export writes: give an empty or new "
            "folder, or one an earlier export wrote"
        )


def _write_data(work: Path, data: pa.Table, fmt: str, shards: int | None) -> list[dict[str, Any]]:
    files = []
    ticker = Ticker(f"export to {work.name}", data.num_rows)
    for split in SPLITS:
        part = data.filter(pc.equal(data["split"], split))
        if shards is None:
            pieces = [(f"{split}.{fmt}", part)]
        else:
            (work / DATA).mkdir(exist_ok=True)
            # contiguous runs of rows, sizes differing by at most one
            bounds = np.linspace(0, part.num_rows, shards + 1).round().astype(int)
            pieces = [
                (
                    f"{DATA}/{split}-{i:05d}-of-{shards:05d}.{fmt}",
                    part.slice(bounds[i], bounds[i + 1] - bounds[i]),
                )
                for i in range(shards)
            ]
        for i, (rel, piece) in enumerate(pieces):
            path = work / rel
            if fmt == "parquet":
                pq.write_table(piece, path)
            else:
                with path.open("w", encoding="utf-8") as f:
                    for row in piece.to_pylist():
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
            files.append(
                {
                    "path": rel,
                    "split": split,
                    "shard": i,
                    "rows": piece.num_rows,
                    "bytes": path.stat().st_size,
                    "sha256": _sha256(path),
                }
            )
            ticker.advance(piece.num_rows)
    ticker.close()
    return files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def validation_summary(lake: Lake, source: str, meta: dict[str, Any]) -> dict[str, Any] | None:
    """What the gate did to ``source`` up to the curated version the dataset read: the
    curate runs before the first one that curated into a later version, added up."""
    pinned = meta.get("tables", {}).get(f"curated/{source}")
    if pinned is None:
        return None
    total: dict[str, Any] = {
        "runs": 0,
        "rows_checked": 0,
        "curated": 0,
        "quarantined": 0,
        "duplicates_dropped": 0,
        "near_duplicates_dropped": 0,
        "held": 0,
        "accepted": 0,
        "failures": Counter(),
        "last_report": None,
    }
    for run in runs_of(lake, CURATE_STAGE, source):
        if run.get("curated_version") is not None and run["curated_version"] > pinned:
            break
        total["runs"] += 1
        total["rows_checked"] += run.get("rows_in", 0)
        for key in ("curated", "quarantined", "duplicates_dropped", "near_duplicates_dropped"):
            total[key] += run.get(key, 0)
        if run.get("batch_status") in ("held", "accepted"):
            total[run["batch_status"]] += 1
        total["failures"].update(run.get("failures") or {})
        total["last_report"] = run.get("report") or total["last_report"]
    if not total["runs"]:
        return None
    total["failures"] = dict(sorted(total["failures"].items()))
    return total


def _front_matter(name: str, files: list[dict[str, Any]]) -> list[str]:
    """YAML naming each split's files, which ``load_dataset(DIR)`` reads."""
    lines = [
        "---",
        f"pretty_name: {json.dumps(name)}",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for split in SPLITS:
        paths = [f["path"] for f in files if f["split"] == split]
        lines += [f"  - split: {split}", "    path:", *(f"    - {p}" for p in paths)]
    return [*lines, "---", ""]


def card(
    name: str,
    meta: dict[str, Any],
    data: pa.Table,
    files: list[dict[str, Any]],
    notes: dict[str, SourceNotes] | None = None,
    validation: dict[str, dict[str, Any] | None] | None = None,
) -> str:
    labels = data["label"].to_pylist()
    splits = data["split"].to_pylist()
    by_label = Counter(labels)
    classes = sorted(by_label)
    counts = Counter(splits)
    fmt = files[0]["path"].rsplit(".", 1)[-1] if files else "parquet"
    builder = "json" if fmt == "jsonl" else "parquet"
    # a shard's number as a wildcard: one pattern per split, as load_dataset takes them
    globs = {
        s: sorted({re.sub(r"-\d{5}-of-", "-*-of-", f["path"]) for f in files if f["split"] == s})
        for s in SPLITS
    }
    data_files = {s: g[0] if len(g) == 1 else g for s, g in globs.items() if g}
    lines = [
        *_front_matter(name, files),
        f"# Dataset {md_code(name)}, version {meta['version']}",
        "",
        f"{data.num_rows} labelled rows of text for classification into {len(classes)} classes.",
        "",
        "## Files",
        "",
        "| split | file | rows |",
        "| --- | --- | --- |",
        *(f"| {f['split']} | `{f['path']}` | {f['rows']} |" for f in files),
        "",
        "Columns: `row_id` (SHA-256 of the extracted content), `source`, `url`, `text`, "
        "`label`, `split`. `manifest.json` holds each file's SHA-256.",
        "",
        'Load without this project, from this folder (`load_dataset("path/to/folder")` '
        "reads the same files through the front matter above):",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{builder}", data_files={json.dumps(data_files)})',
        "```",
        "",
        "## Label distribution",
        "",
        "| label | " + " | ".join(SPLITS) + " | total |",
        "| --- | " + " | ".join("---" for _ in SPLITS) + " | --- |",
    ]
    pair = Counter(zip(labels, splits, strict=True))
    for label in classes:
        cells = " | ".join(str(pair[(label, s)]) for s in SPLITS)
        lines.append(f"| {md_escape(label)} | {cells} | {by_label[label]} |")
    lines.append("| total | " + " | ".join(str(counts[s]) for s in SPLITS) + f" | {len(labels)} |")
    lines += [
        "",
        "## Sources",
        "",
        "| source | rows | licence | robots.txt |",
        "| --- | --- | --- | --- |",
    ]
    for src, n in sorted(Counter(data["source"].to_pylist()).items()):
        note = (notes or {}).get(src, SourceNotes())
        lines.append(
            f"| {md_code(src)} | {n} | {md_escape(note.licence)} | {md_escape(note.robots)} |"
        )
    lines += [
        "",
        "## Lineage",
        "",
        "Cut from these Delta table versions of the harvest lake:",
        "",
        *(f"- {md_code(t)} version {v}" for t, v in sorted(meta.get("tables", {}).items())),
        "",
        _split_line(meta),
        "",
        _test_line(meta),
        "",
        f"Content SHA-256 of the version: {md_code(meta.get('content_sha256', NOT_RECORDED))}.",
        "",
        "## Leak check",
        "",
        _leak_line(meta),
        "",
        "## Validation",
        "",
    ]
    for src in sorted((validation or {}).keys()):
        lines += _validation_lines(src, (validation or {})[src])
    return "\n".join(lines)


def _split_line(meta: dict[str, Any]) -> str:
    split = meta.get("split")
    base = f"fractions {meta.get('fractions')}, seed {meta.get('seed')}"
    if split is None:
        return f"Split: stratified by label, row by row, {base}."
    if split.get("time_field"):
        how = f"by time: oldest {md_code(split['time_field'])} to train, newest to test"
    elif split.get("stratify"):
        how = "stratified by label"
    else:
        how = "at random, not stratified"
    if split.get("group"):
        how += (
            f"; rows sharing {md_code(split['group'])}, exact duplicates and near duplicates "
            f"(MinHash similarity >= {split.get('near_threshold')}) kept on one side"
        )
    groups = meta.get("groups")
    if groups:
        how += (
            f" ({groups['count']} groups, the largest {groups['largest']} row(s); "
            f"{groups['rows_sharing_a_group']} rows share a group with another)"
        )
    ranges = meta.get("time_ranges")
    if ranges:
        how += "; " + ", ".join(
            f"{s} {md_escape(lo)} to {md_escape(hi)}" for s, (lo, hi) in ranges.items()
        )
    repeats = meta.get("repeats_dropped")
    tail = f" {repeats} rows left out: an earlier source holds the same content." if repeats else ""
    return f"Split: {how}; {base}.{tail}"


def _test_line(meta: dict[str, Any]) -> str:
    if meta.get("test_from") == "evaluation reserve":
        return (
            f"Test and validation rows: the {meta.get('reserve_rows')} labelled rows of the "
            "evaluation reserve, drawn at random by the label pushes; every other row trains."
        )
    return "Test rows: drawn from every labelled row."


def _leak_line(meta: dict[str, Any]) -> str:
    leak = meta.get("leakage")
    if leak is None:
        return f"{NOT_RECORDED} (version cut before the check existed)."
    return (
        f"{leak['exact']} exact and {leak['near']} near duplicate pairs across splits (near: "
        f"MinHash similarity >= {leak['near_threshold']}); a version with any is not written."
    )


def _validation_lines(source: str, v: dict[str, Any] | None) -> list[str]:
    if v is None:
        missing = f"{NOT_RECORDED} (no curate run in the lake's `runs` table)"
        return [f"- {md_code(source)}: {missing}", ""]
    failures = ", ".join(f"{md_code(k)} {n}" for k, n in v["failures"].items()) or "none"
    # the report's name only: its folder is the reports root of the machine that curated
    report = md_code(Path(v["last_report"]).name) if v["last_report"] else NOT_RECORDED
    return [
        f"- {md_code(source)}: {v['runs']} curate run(s) checked {v['rows_checked']} rows: "
        f"{v['curated']} curated, {v['quarantined']} quarantined, {v['duplicates_dropped']} "
        f"exact and {v['near_duplicates_dropped']} near duplicates dropped; batches held "
        f"{v['held']}, accepted by hand {v['accepted']}; failed expectations: {failures}; "
        f"gate report {report}",
        "",
    ]
