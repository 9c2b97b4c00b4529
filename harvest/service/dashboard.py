"""The dashboard: one server-rendered page of the summary (``harvest.service.summary``).

Everything is inline (style, charts as SVG, a little script), so the page needs no static
files and no network beyond the service itself. The script asks ``/api/summary`` every few
seconds and redraws the runs table and the progress of running crawls; the rest of the page
is as fresh as its last load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from harvest.service.summary import schedule_text
from ingestion.runs import STATUSES

REFRESH_MS = 4000
COUNTS = ("requests", "items", "curated", "quarantined", "bans")
# one colour per series, the same in every chart
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;background:#fafafa}
h1{margin:0 0 .2em}h2{margin:1.6em 0 .4em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin:1em 0 .3em;font-size:1em}
table{border-collapse:collapse;margin:.3em 0 1em;background:#fff}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#666}.err{color:#b00020}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:.85em;color:#fff;
background:#888}
.badge.finished{background:#2e7d32}.badge.failed,.badge.timed_out{background:#c62828}
.badge.running{background:#1565c0}.badge.queued{background:#6d6d6d}
.badge.interrupted{background:#ef6c00}
.grid{display:flex;flex-wrap:wrap;gap:1.5em}
.card{background:#fff;border:1px solid #ddd;padding:.6em 1em}
.bar{background:#e6e6e6;width:220px;height:10px;display:inline-block;vertical-align:middle}
.bar>span{display:block;height:100%;background:#2e7d32}
svg{background:#fff}svg text{font-size:10px;fill:#555}
#stamp{color:#666;font-size:.9em}
"""

SCRIPT = """
(function () {
  var COUNTS = %(counts)s;
  function cell(row, text, cls) {
    var td = document.createElement('td');
    td.textContent = text == null ? '' : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }
  function badge(status) {
    var span = document.createElement('span');
    span.className = 'badge ' + String(status).replace(/[^a-z_]/g, '');
    span.textContent = status;
    return span;
  }
  function when(value) {
    return value ? String(value).replace('T', ' ').slice(0, 19) : '';
  }
  function drawRuns(runs) {
    var body = document.getElementById('runs-body');
    if (!body) return;
    body.textContent = '';
    runs.forEach(function (r) {
      var row = document.createElement('tr');
      row.setAttribute('data-run', r.id);
      cell(row, r.id); cell(row, r.source); cell(row, r.trigger);
      cell(row, '').appendChild(badge(r.status));
      cell(row, when(r.started_at)); cell(row, when(r.ended_at));
      var counts = r.counts || {};
      COUNTS.forEach(function (k) { cell(row, counts[k] == null ? '' : counts[k], 'n'); });
      cell(row, r.error || '', 'err');
      body.appendChild(row);
    });
    var empty = document.getElementById('runs-empty');
    if (empty) empty.hidden = runs.length > 0;
  }
  function drawRunning(running) {
    var box = document.getElementById('running');
    if (!box) return;
    box.textContent = '';
    if (!running.length) {
      var p = document.createElement('p');
      p.className = 'note';
      p.textContent = 'No crawl is running.';
      box.appendChild(p);
      return;
    }
    running.forEach(function (r) {
      var card = document.createElement('div');
      card.className = 'card';
      card.setAttribute('data-running', r.id);
      var head = document.createElement('div');
      head.textContent = r.source + ' (' + r.id + ') ';
      head.appendChild(badge(r.status));
      card.appendChild(head);
      var progress = r.progress || {};
      var keys = Object.keys(progress);
      var line = document.createElement('div');
      line.textContent = keys.length ? keys.map(function (k) {
        var v = progress[k];
        return k + ' ' + (typeof v === 'object' && v !== null ? JSON.stringify(v) : v);
      }).join(' \\u00b7 ') : 'starting';
      card.appendChild(line);
      box.appendChild(card);
    });
  }
  function refresh() {
    fetch('api/summary', {cache: 'no-store', headers: {'Accept': 'application/json'}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) return;
        drawRuns(s.runs || []);
        drawRunning(s.running || []);
        var stamp = document.getElementById('stamp');
        if (stamp) stamp.textContent = 'updated ' + when(s.generated_at) + ' UTC';
      })
      .catch(function () {
        var stamp = document.getElementById('stamp');
        if (stamp) stamp.textContent = 'the service does not answer; retrying';
      });
  }
  setInterval(refresh, %(refresh)d);
})();
"""


def page(summary: Mapping[str, Any], refresh_ms: int = REFRESH_MS) -> str:
    """The dashboard of ``summary`` as one HTML document."""
    script = SCRIPT % {"counts": json.dumps(list(COUNTS)), "refresh": int(refresh_ms)}
    parts = [
        "<h1>harvest</h1>",
        f'<div id="stamp">generated {_e(_when(summary.get("generated_at")))} UTC · lake '
        f"{_e(summary.get('lake'))}</div>",
        "<h2>Sources</h2>",
        _sources(summary.get("sources") or []),
        "<h2>Running</h2>",
        f'<div id="running" class="grid">{_running(summary.get("running") or [])}</div>',
        "<h2>Recent runs</h2>",
        _runs(summary),
        "<h2>Validation pass rates</h2>",
        _pass_rates(summary.get("sources") or []),
        "<h2>Labelling</h2>",
        _labelling(summary.get("sources") or []),
        "<h2>Models</h2>",
        _models(summary.get("models") or {}),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        # no favicon request: a 404 for it would be a console error
        '<link rel="icon" href="data:,"><title>harvest dashboard</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}"
        f"<script>{script}</script></body></html>"
    )


# -- sections ------------------------------------------------------------------------------


def _sources(sources: Sequence[Mapping[str, Any]]) -> str:
    if not sources:
        return '<p class="note">No sources yet: add a recipe to the sources folder.</p>'
    head = ("source", "schedule", "next run", "last run", "last crawl", "last curate",
            "batch", "quarantine")  # fmt: skip
    rows = []
    for s in sources:
        run = s.get("last_run") or None
        crawl, curate = s.get("last_crawl"), s.get("last_curate")
        held = s.get("held")
        problems = [s[k] for k in ("recipe_error", "status_error", "last_run_error") if s.get(k)]
        rows.append(
            "<tr>"
            f'<td data-source="{_e(s.get("source"))}"><b>{_e(s.get("source"))}</b>'
            + "".join(f'<div class="err">{_e(p)}</div>' for p in problems)
            + "</td>"
            f"<td>{_e(schedule_text(s.get('schedule'))) or '<span class=note>none</span>'}</td>"
            f"<td>{_e(_when(s.get('next_run'))) or '<span class=note>none</span>'}</td>"
            f"<td>{_last_run(run)}</td>"
            + (
                f"<td>{_e(_when(crawl.get('at')))}<br>{_e(crawl.get('state'))}, "
                f"{_e(crawl.get('rows', '?'))} rows</td>"
                if isinstance(crawl, Mapping)
                else '<td class="note">never</td>'
            )
            + (
                f"<td>{_e(_when(curate.get('at')))}<br>{_e(curate.get('curated'))} curated, "
                f"{_e(curate.get('quarantined'))} quarantined</td>"
                if isinstance(curate, Mapping)
                else '<td class="note">never</td>'
            )
            + (
                f'<td class="err">held: {_e("; ".join(held.get("reasons") or []))}</td>'
                if isinstance(held, Mapping)
                else "<td>ok</td>"
            )
            + f'<td class="n">{_e((s.get("quarantine") or {}).get("rows", ""))}</td>'
            "</tr>"
        )
    return _table(head, rows)


def _last_run(run: Mapping[str, Any] | None) -> str:
    if not run:
        return '<span class="note">none yet</span>'
    error = f'<div class="err">{_e(run.get("error"))}</div>' if run.get("error") else ""
    return (
        f"{_badge(run.get('status'))} {_e(_when(run.get('started_at')))}"
        f'<div class="note">{_e(run.get("id"))} · {_e(run.get("trigger"))}</div>{error}'
    )


def _running(running: Sequence[Mapping[str, Any]]) -> str:
    if not running:
        return '<p class="note">No crawl is running.</p>'
    cards = []
    for r in running:
        progress = r.get("progress") or {}
        shown = " · ".join(
            f"{_e(k)} {_e(json.dumps(v) if isinstance(v, dict | list) else v)}"
            for k, v in progress.items()
        )
        cards.append(
            f'<div class="card" data-running="{_e(r.get("id"))}">'
            f"<div>{_e(r.get('source'))} ({_e(r.get('id'))}) {_badge(r.get('status'))}</div>"
            f"<div>{shown or 'starting'}</div></div>"
        )
    return "".join(cards)


def _runs(summary: Mapping[str, Any]) -> str:
    runs = summary.get("runs") or []
    head = ("run", "source", "trigger", "status", "started", "ended", *COUNTS, "error")
    rows = []
    for r in runs:
        counts = r.get("counts") or {}
        rows.append(
            f'<tr data-run="{_e(r.get("id"))}"><td>{_e(r.get("id"))}</td>'
            f"<td>{_e(r.get('source'))}</td><td>{_e(r.get('trigger'))}</td>"
            f"<td>{_badge(r.get('status'))}</td><td>{_e(_when(r.get('started_at')))}</td>"
            f"<td>{_e(_when(r.get('ended_at')))}</td>"
            + "".join(f'<td class="n">{_e(counts.get(k, ""))}</td>' for k in COUNTS)
            + f'<td class="err">{_e(r.get("error") or "")}</td></tr>'
        )
    note = summary.get("runs_error") or (
        "No runs yet." if summary.get("history") == "recorded" else summary.get("history")
    )
    return f'<p id="runs-empty" class="note"{" hidden" if runs else ""}>{_e(note)}</p>' + _table(
        head, rows, body_id="runs-body"
    )


def _pass_rates(sources: Sequence[Mapping[str, Any]]) -> str:
    cards = []
    for s in sources:
        points = [p for p in s.get("pass_rates") or [] if isinstance(p, Mapping)]
        errors = [p["error"] for p in points if "error" in p]
        rated = [p for p in points if p.get("rate") is not None]
        if errors:
            body = f'<p class="err">{_e(errors[0])}</p>'
        elif not rated:
            body = '<p class="note">none yet: no curate run</p>'
        else:
            last = rated[-1]
            body = (
                _chart({"pass rate": [p["rate"] for p in rated]},
                       [_when(p.get("at")) for p in rated], y_max=1.0, percent=True)
                + f'<div>last: <b>{last["rate"]:.1%}</b> ({_e(last["curated"])} curated, '
                f"{_e(last['quarantined'])} quarantined, {_e(last.get('batch_status'))}) "
                f"over {len(rated)} curate runs</div>"
            )  # fmt: skip
        cards.append(f'<div class="card"><h3>{_e(s.get("source"))}</h3>{body}</div>')
    return f'<div class="grid">{"".join(cards)}</div>' if cards else '<p class="note">none yet</p>'


def _labelling(sources: Sequence[Mapping[str, Any]]) -> str:
    cards = []
    for s in sources:
        lab = s.get("labelling")
        if not isinstance(lab, Mapping):
            body = '<p class="note">none yet: no labels pulled</p>'
        elif "error" in lab:
            body = f'<p class="err">{_e(lab["error"])}</p>'
        else:
            share = lab.get("labelled_share") or 0.0
            classes = lab.get("classes") or {}
            top = max(classes.values(), default=0) or 1
            rows = [
                f'<tr><td>{_e(c)}</td><td class="n">{_e(n)}</td><td><span class="bar">'
                f'<span style="width:{100 * n / top:.0f}%"></span></span></td></tr>'
                for c, n in classes.items()
            ]
            body = (
                f"<div>{_e(lab.get('labelled'))} of {_e(lab.get('curated'))} curated rows "
                f'labelled ({share:.1%}) <span class="bar"><span style="width:'
                f'{min(share, 1.0) * 100:.0f}%"></span></span></div>'
                f"<div class=note>{_e(lab.get('annotations'))} annotations; classes count "
                f"{_e(lab.get('classes_count'))}</div>" + _table(("class", "count", ""), rows)
            )
        cards.append(f'<div class="card"><h3>{_e(s.get("source"))}</h3>{body}</div>')
    return f'<div class="grid">{"".join(cards)}</div>' if cards else '<p class="note">none yet</p>'


def _models(models: Mapping[str, Any]) -> str:
    found = models.get("models") or []
    out = [f'<p class="note">MLflow: {_e(models.get("tracking_uri"))}</p>']
    if models.get("note"):
        cls = "err" if models.get("error") else "note"
        out.append(f'<p class="{cls}">{_e(models["note"])}</p>')
    for m in found:
        out.append(
            f'<div class="card"><h3>{_e(m.get("model"))} v{_e(m.get("version"))} '
            f'<span class="note">({_e(m.get("shown"))}; dataset {_e(m.get("dataset"))} '
            f"v{_e(m.get('dataset_version'))})</span></h3>"
        )
        if m.get("note"):
            out.append(f'<p class="note">{_e(m["note"])}</p></div>')
            continue
        head = m.get("headline") or {}
        out.append(
            _table(("metric", "value"), [
                f'<tr><td>{_e(k)}</td><td class="n">{_e(_number(v))}</td></tr>'
                for k, v in head.items()
            ]) if head else '<p class="note">no metrics recorded</p>'
        )  # fmt: skip
        out.append('<div class="grid">')
        out.append(_confusion(m.get("confusion")))
        out.append(_curves(m.get("curves") or {}))
        out.append("</div></div>")
    return "".join(out)


def _confusion(confusion: Mapping[str, Any] | None) -> str:
    if not confusion or not confusion.get("matrix"):
        return '<div><h3>Confusion matrix</h3><p class="note">none recorded</p></div>'
    matrix = confusion["matrix"]
    classes = confusion.get("classes") or [str(i) for i in range(len(matrix))]
    top = max((max(row, default=0) for row in matrix), default=0) or 1
    rows = []
    for name, row in zip(classes, matrix, strict=False):
        cells = "".join(
            f'<td class="n" style="background:rgba(31,119,180,{0.85 * v / top:.2f})">{_e(v)}</td>'
            for v in row
        )
        rows.append(f"<tr><th>{_e(name)}</th>{cells}</tr>")
    head = "".join(f"<th>{_e(c)}</th>" for c in classes)
    return (
        '<div><h3>Confusion matrix (test split)</h3><table class="confusion">'
        f"<tr><th>true \\ predicted</th>{head}</tr>{''.join(rows)}</table></div>"
    )


def _curves(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    if not curves:
        return '<div><h3>Learning curves</h3><p class="note">none recorded</p></div>'
    losses = {k: v for k, v in curves.items() if "loss" in k}
    others = {k: v for k, v in curves.items() if "loss" not in k}
    charts = []
    for group in (losses, others):
        if not group:
            continue
        steps = sorted({int(p["step"]) for pts in group.values() for p in pts})
        series = {k: [_at_step(pts, s) for s in steps] for k, pts in group.items()}
        charts.append(_chart(series, [f"epoch {s}" for s in steps]))
    return f"<div><h3>Learning curves</h3>{''.join(charts)}</div>"


def _at_step(points: Sequence[Mapping[str, Any]], step: int) -> float | None:
    for p in points:
        if int(p["step"]) == step:
            return float(p["value"])
    return None


# -- pieces --------------------------------------------------------------------------------


def _chart(
    series: Mapping[str, Sequence[float | None]],
    labels: Sequence[str],
    y_max: float | None = None,
    percent: bool = False,
    width: int = 360,
    height: int = 160,
) -> str:
    """A line chart of ``series`` over the points ``labels`` names, as inline SVG."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not values:
        return '<p class="note">nothing to draw</p>'
    # the legend sits in the top margin, above the lines
    left, right, top, bottom = 40, 10, 22, 22
    lo = 0.0 if percent or min(values) >= 0 else min(values)
    hi = y_max if y_max is not None else max(values)
    hi = hi if hi > lo else lo + 1.0
    n = max(len(labels), 1)

    def x(i: int) -> float:
        return left + (width - left - right) * (i / (n - 1) if n > 1 else 0.5)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - lo) / (hi - lo))

    def tick(v: float) -> str:
        return f"{v:.0%}" if percent else f"{v:.3g}"

    out = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<line x1="{left}" y1="{y(lo):.1f}" x2="{width - right}" y2="{y(lo):.1f}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y(lo):.1f}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{y(hi) + 4:.1f}" text-anchor="end">{_e(tick(hi))}</text>',
        f'<text x="{left - 4}" y="{y(lo) + 4:.1f}" text-anchor="end">{_e(tick(lo))}</text>',
        f'<text x="{left}" y="{height - 6}">{_e(labels[0] if labels else "")}</text>',
    ]
    if len(labels) > 1:
        out.append(
            f'<text x="{width - right}" y="{height - 6}" text-anchor="end">{_e(labels[-1])}</text>'
        )
    for i, (name, vs) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = [(x(j), y(v), labels[j] if j < len(labels) else "", v)
                  for j, v in enumerate(vs) if v is not None]  # fmt: skip
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
            out.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>'
            )
        for px, py, label, v in points:
            out.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}">'
                f"<title>{_e(name)}: {_e(tick(v))} ({_e(label)})</title></circle>"
            )
        out.append(
            f'<text x="{left + 110 * i}" y="12" fill="{colour}" '
            f'style="fill:{colour}">{_e(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _table(head: Sequence[str], rows: Sequence[str], body_id: str | None = None) -> str:
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = f' id="{body_id}"' if body_id else ""
    return f"<table><thead><tr>{ths}</tr></thead><tbody{body}>{''.join(rows)}</tbody></table>"


def _badge(status: Any) -> str:
    text = str(status or "unknown")
    cls = text if text in STATUSES else "other"
    return f'<span class="badge {cls}">{_e(text)}</span>'


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


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)
