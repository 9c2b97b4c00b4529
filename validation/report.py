"""A validation report per gate run: a self-contained HTML page and the same figures as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
    ".ok{color:#176f2c}.fail{color:#b00020;font-weight:bold}"
)


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
    rows = "".join(
        f"<tr><td>{escape(o.rule)}</td>"
        f"<td class={'ok' if o.success else 'fail'}>{'pass' if o.success else 'fail'}</td>"
        f"<td>{o.unexpected}</td></tr>"
        for o in outcomes
    )
    batch_rows = "".join(
        f"<tr><td>{escape(c.check)}</td>"
        f"<td class={'ok' if c.success else 'fail'}>{'pass' if c.success else 'fail'}</td>"
        f"<td>{escape(str(c.observed))}</td><td>{escape(c.expected)}</td>"
        f"<td>{escape(c.engine)}</td></tr>"
        for c in checks
    )
    if checks:
        baseline = data["baseline_raw_version"]
        batch_section = (
            f"<h2>Batch-level gates</h2><p>Against the last good batch (raw up to version "
            f"{baseline}).</p><table><tr><th>check</th><th>result</th><th>observed</th>"
            f"<th>expected</th><th>by</th></tr>{batch_rows}</table>"
        )
    else:
        batch_section = "<h2>Batch-level gates</h2><p>None ran for this batch.</p>"
    status = getattr(result, "batch_status", None)
    verdict = (
        f"<p class={'fail' if status == 'held' else 'ok'}>Batch {escape(str(status))}"
        + (": held back whole, nothing curated or quarantined" if status == "held" else "")
        + "</p>"
    )
    figures = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in summary.items())
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>Validation: {escape(source)}"
        f"</title><style>{STYLE}</style></head><body>"
        f"<h1>Validation of raw/{escape(source)} up to version {raw_version}</h1>"
        f"<p>Written {escape(str(data['written_at']))}.</p>{verdict}"
        f"<h2>Batch</h2><table>{figures}</table>{batch_section}"
        f"<h2>Row-level expectations</h2><table><tr><th>expectation</th><th>result</th>"
        f"<th>rows failing</th></tr>{rows}</table></body></html>"
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
    lines = []
    for _, stem, data in sorted(entries, reverse=True):
        s = data["summary"]
        failed_rows = [e["expectation"] for e in data["expectations"] if not e["success"]]
        failed_batch = [c["check"] for c in data.get("batch_expectations", []) if not c["success"]]
        status = s.get("batch_status") or "published"
        lines.append(
            f"<tr><td><a href='{escape(stem)}.html'>{escape(stem)}</a></td>"
            f"<td class={'fail' if status == 'held' else 'ok'}>{escape(status)}</td>"
            f"<td>{s.get('rows_in')}</td><td>{s.get('curated')}</td><td>{s.get('quarantined')}</td>"
            f"<td>{escape(', '.join(failed_rows)) or '-'}</td>"
            f"<td>{escape(', '.join(failed_batch)) or '-'}</td></tr>"
        )
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>Batches: {escape(source)}"
        f"</title><style>{STYLE}</style></head><body><h1>Batches of {escape(source)}</h1>"
        f"<table><tr><th>batch</th><th>result</th><th>rows</th><th>curated</th>"
        f"<th>quarantined</th><th>row-level failing</th><th>batch-level failing</th></tr>"
        f"{''.join(lines)}</table></body></html>"
    )
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
