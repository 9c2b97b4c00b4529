"""The dashboard: one server-rendered page of the summary (``harvest.service.summary``).

Everything is inline (style, charts as SVG, a little script), so the page needs no static
files and no network beyond the service itself. The layout is ``templates/dashboard.html``;
this module turns the summary into what it draws. The script asks ``/api/summary`` every few
seconds and redraws the runs table and the progress of running crawls; the rest of the page
is as fresh as its last load. Each run links to its log and its report; "run now" posts
``/crawls`` with the API token typed into the page, which the tab keeps in its session
storage and sends to this service alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from harvest.service.runs import STATUSES
from harvest.service.summary import schedule_text
from ingestion.html import Cell, render

REFRESH_MS = 4000
COUNTS = ("requests", "items", "curated", "quarantined", "bans")
# one colour per series, the same in every chart
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def page(summary: Mapping[str, Any], refresh_ms: int = REFRESH_MS) -> str:
    """The dashboard of ``summary`` as one HTML document."""
    sources = summary.get("sources") or []
    models = summary.get("models") or {}
    note = summary.get("runs_error") or (
        "No runs yet." if summary.get("history") == "recorded" else summary.get("history")
    )
    return render(
        "harvest.service",
        "dashboard.html",
        generated_at=summary.get("generated_at"),
        lake=summary.get("lake"),
        sources=sources,
        running=summary.get("running") or [],
        runs=summary.get("runs") or [],
        runs_note=note,
        pass_rates=[_pass_rates(s) for s in sources],
        models=models,
        links=summary.get("links") or {},
        model_cards=[_model(m) for m in models.get("models") or []],
        drift_cards=[_drift(m) for m in summary.get("monitoring") or []],
        counts=list(COUNTS),
        statuses=STATUSES,
        refresh_ms=int(refresh_ms),
        when=_when,
        schedule_text=schedule_text,
        progress=_progress,
    )


# -- what the sections draw ------------------------------------------------------------------


def _progress(progress: Mapping[str, Any] | None) -> str:
    return " · ".join(
        f"{k} {json.dumps(v) if isinstance(v, dict | list) else v}"
        for k, v in (progress or {}).items()
    )


def _pass_rates(source: Mapping[str, Any]) -> dict[str, Any]:
    points = [p for p in source.get("pass_rates") or [] if isinstance(p, Mapping)]
    errors = [p["error"] for p in points if "error" in p]
    rated = [p for p in points if p.get("rate") is not None]
    return {
        "source": source.get("source"),
        "error": errors[0] if errors else None,
        "last": rated[-1] if rated else None,
        "runs": len(rated),
        "chart": _chart(
            {"pass rate": [p["rate"] for p in rated]},
            [_when(p.get("at")) for p in rated],
            y_max=1.0,
            percent=True,
        ),
    }


def _model(m: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("model", "version", "shown", "dataset", "dataset_version", "note")
    return {
        **{k: m.get(k) for k in keys},
        "headline": [[k, Cell(_number(v), cls="n")] for k, v in (m.get("headline") or {}).items()],
        "confusion": _confusion(m.get("confusion")),
        "curves": _curves(m.get("curves") or {}),
    }


def _drift(watched: Mapping[str, Any]) -> dict[str, Any]:
    """A model's drift status, its last window's features and a chart of each feature's
    statistic (KS statistic, or Jensen-Shannon distance for the class mix) by window."""
    windows = watched.get("history") or []
    features = sorted({f for w in windows for f in w.get("statistic", {})})
    last = windows[-1] if windows else None
    return {
        "model": watched.get("model"),
        "error": watched.get("error"),
        "status": watched.get("status"),
        "last": [
            [
                f,
                Cell(_number(last["statistic"].get(f)), cls="n"),
                Cell("drifted", cls="fail") if f in last["drifted"] else Cell("steady", cls="ok"),
            ]
            for f in features
        ]
        if last
        else [],
        "chart": _chart(
            {f: [w.get("statistic", {}).get(f) for w in windows] for f in features},
            [_when(w.get("end")) for w in windows],
            y_max=1.0,
        ),
    }


def _confusion(confusion: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Classes, and per true class its counts each with the shade of its cell."""
    if not confusion or not confusion.get("matrix"):
        return None
    matrix = confusion["matrix"]
    classes = confusion.get("classes") or [str(i) for i in range(len(matrix))]
    top = max((max(row, default=0) for row in matrix), default=0) or 1
    rows = [
        (name, [(v, f"{0.85 * v / top:.2f}") for v in row])
        for name, row in zip(classes, matrix, strict=False)
    ]
    return {"classes": classes, "rows": rows}


def _curves(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any] | None]:
    """One chart of the losses, one of the rest."""
    losses = {k: v for k, v in curves.items() if "loss" in k}
    others = {k: v for k, v in curves.items() if "loss" not in k}
    charts = []
    for group in (losses, others):
        if not group:
            continue
        steps = sorted({int(p["step"]) for pts in group.values() for p in pts})
        series = {k: [_at_step(pts, s) for s in steps] for k, pts in group.items()}
        charts.append(_chart(series, [f"epoch {s}" for s in steps]))
    return charts


def _at_step(points: Sequence[Mapping[str, Any]], step: int) -> float | None:
    for p in points:
        if int(p["step"]) == step:
            return float(p["value"])
    return None


def _chart(
    series: Mapping[str, Sequence[float | None]],
    labels: Sequence[str],
    y_max: float | None = None,
    percent: bool = False,
    width: int = 360,
    height: int = 160,
) -> dict[str, Any] | None:
    """The geometry of a line chart of ``series`` over the points ``labels`` names (the
    template draws it as SVG); None when there is nothing to draw."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not values:
        return None
    # the legend sits in the top margin, above the lines
    left, right, top, bottom = 40, 10, 22, 22
    lo = 0.0 if percent or min(values) >= 0 else min(values)
    hi = y_max if y_max is not None else max(values)
    hi = hi if hi > lo else lo + 1.0
    n = max(len(labels), 1)

    def x(i: int) -> float:
        return left + (width - left - right) * (i / (n - 1) if n > 1 else 0.5)

    def y(v: float) -> str:
        return f"{top + (height - top - bottom) * (1 - (v - lo) / (hi - lo)):.1f}"

    def tick(v: float) -> str:
        return f"{v:.0%}" if percent else f"{v:.3g}"

    ticks = [
        (left - 4, f"{float(y(hi)) + 4:.1f}", tick(hi), "end"),
        (left - 4, f"{float(y(lo)) + 4:.1f}", tick(lo), "end"),
        (left, height - 6, labels[0] if labels else "", None),
    ]
    if len(labels) > 1:
        ticks.append((width - right, height - 6, labels[-1], "end"))
    lines = []
    for i, (name, vs) in enumerate(series.items()):
        dots = [
            (f"{x(j):.1f}", y(v), f"{name}: {tick(v)} ({labels[j] if j < len(labels) else ''})")
            for j, v in enumerate(vs)
            if v is not None
        ]
        lines.append(
            {
                "name": name,
                "colour": COLOURS[i % len(COLOURS)],
                "points": " ".join(f"{cx},{cy}" for cx, cy, _ in dots) if len(dots) > 1 else "",
                "dots": dots,
                "legend_x": left + 110 * i,
            }
        )
    return {
        "width": width,
        "height": height,
        "axes": [(left, y(lo), width - right, y(lo)), (left, top, left, y(lo))],
        "ticks": ticks,
        "series": lines,
    }


def _when(value: Any) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS``; anything else as it is."""
    if not value:
        return ""
    text = str(value)
    return text.replace("T", " ")[:19] if len(text) >= 19 and text[10] == "T" else text


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
