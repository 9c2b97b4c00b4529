"""A validation report per gate run: a self-contained HTML page and the same figures as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingestion.html import Cell, render


def write_report(
    report_dir: str | Path,
    source: str,
    raw_version: int | None,
    outcomes: list[Any],
    result: Any,
    batch: Any = None,
) -> Path:
    """``batch``: the batch-level verdict (validation/batch.py), if the gate ran one."""
    folder = Path(report_dir) / "validation" / source
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"raw-v{raw_version}"
    skip = {"report", "failures", "held_reasons"}
    summary = {k: v for k, v in asdict(result).items() if k not in skip}
    checks = list(batch.checks) if batch is not None else []
    data = {
        "source": source,
        "raw_version": raw_version,
        "written_at": datetime.now(UTC).isoformat(),
        "summary": summary,
        "expectations": [
            {"expectation": o.rule, "success": o.success, "unexpected": o.unexpected}
            for o in outcomes
        ],
        "batch_expectations": [asdict(c) for c in checks],
        "baseline_raw_version": batch.baseline_raw_to if batch is not None else None,
    }
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=2))
    status = getattr(result, "batch_status", None)
    page = render(
        "validation",
        "batch.html",
        source=source,
        raw_version=raw_version,
        written_at=data["written_at"],
        status=status,
        held=status == "held",
        figures=[[Cell(k, head=True), v] for k, v in summary.items()],
        baseline=data["baseline_raw_version"],
        checks=[[c.check, _verdict(c.success), c.observed, c.expected, c.engine] for c in checks],
        expectations=[[o.rule, _verdict(o.success), o.unexpected] for o in outcomes],
    )
    path = folder / f"{stem}.html"
    path.write_text(page, encoding="utf-8")
    (folder / "latest.html").write_text(page, encoding="utf-8")
    write_index(folder, source)
    return path


def write_index(folder: Path, source: str) -> Path:
    """One page listing every batch's result, row-level and batch-level, newest first."""
    entries = []
    for path in folder.glob("raw-v*.json"):
        data = json.loads(path.read_text())
        entries.append((str(data.get("written_at")), path.stem, data))
    batches = []
    for _, stem, data in sorted(entries, reverse=True):
        s = data["summary"]
        failed_rows = [e["expectation"] for e in data["expectations"] if not e["success"]]
        failed_batch = [c["check"] for c in data.get("batch_expectations", []) if not c["success"]]
        status = s.get("batch_status") or "published"
        batches.append(
            [
                Cell(stem, href=f"{stem}.html"),
                Cell(status, cls="fail" if status == "held" else "ok"),
                s.get("rows_in"),
                s.get("curated"),
                s.get("quarantined"),
                ", ".join(failed_rows) or "-",
                ", ".join(failed_batch) or "-",
            ]
        )
    path = folder / "index.html"
    path.write_text(
        render("validation", "batches.html", source=source, batches=batches), encoding="utf-8"
    )
    return path


def _verdict(success: bool) -> Cell:
    return Cell("pass", cls="ok") if success else Cell("fail", cls="fail")
