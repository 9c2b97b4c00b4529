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
    report_dir: str | Path, source: str, raw_version: int | None, outcomes: list[Any], result: Any
) -> Path:
    folder = Path(report_dir) / "validation" / source
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"raw-v{raw_version}"
    summary = {k: v for k, v in asdict(result).items() if k not in {"report", "failures"}}
    data = {
        "source": source,
        "raw_version": raw_version,
        "written_at": datetime.now(UTC).isoformat(),
        "summary": summary,
        "expectations": [
            {"expectation": o.rule, "success": o.success, "unexpected": o.unexpected}
            for o in outcomes
        ],
    }
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=2))
    rows = "".join(
        f"<tr><td>{escape(o.rule)}</td>"
        f"<td class={'ok' if o.success else 'fail'}>{'pass' if o.success else 'fail'}</td>"
        f"<td>{o.unexpected}</td></tr>"
        for o in outcomes
    )
    figures = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in summary.items())
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>Validation: {escape(source)}"
        f"</title><style>{STYLE}</style></head><body>"
        f"<h1>Validation of raw/{escape(source)} up to version {raw_version}</h1>"
        f"<p>Written {escape(str(data['written_at']))}.</p><h2>Batch</h2><table>{figures}</table>"
        f"<h2>Expectations</h2><table><tr><th>expectation</th><th>result</th>"
        f"<th>rows failing</th></tr>{rows}</table></body></html>"
    )
    path = folder / f"{stem}.html"
    path.write_text(page, encoding="utf-8")
    (folder / "latest.html").write_text(page, encoding="utf-8")
    return path
