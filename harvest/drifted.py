"""The inputs a drifted model met, made rows of its source so that they can be labelled.

When live data moves away from the training split, labelling more of the crawled rows
teaches the model nothing about the new ground: the drift run labels what the model met.
Those are the logged texts of the model's current drifted streak (the newest windows that
drifted, back to the last steady one), which exist only where ``serve.log_text`` kept them.

They are appended to ``curated/<source>`` as rows of their own (``url``
``live://<model>/<text sha256>``, the recipe's text field holding the text), so that their
labels join a dataset like any other row's. The append skips rows already there, so a push
killed halfway is finished by the next.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from harvest.monitor import MonitorError
from harvest.monitor import table_of as monitoring_of
from harvest.service.predictlog import table_of as predictions_of
from ingestion.schema import content_sha256

if TYPE_CHECKING:
    from harvest.recipe import Recipe
    from ingestion.lake import Lake

LIVE = "live://"
LOG_TEXT = "serve.log_text = true (HARVEST_SERVE_LOG_TEXT=1)"


@dataclass
class Inputs:
    model: str
    window_start: datetime
    window_end: datetime
    windows: int  # drifted windows in the streak
    logged: int  # predictions logged in them
    texts: list[str]  # distinct texts, first seen first

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["texts"] = len(self.texts)
        out["window_start"] = self.window_start.isoformat()
        out["window_end"] = self.window_end.isoformat()
        return out


def streak(lake: Lake, model: str) -> tuple[datetime, datetime, int] | None:
    """Start, end and count of the newest run of drifted windows; None while the newest
    window is steady."""
    if not lake.exists(monitoring_of(model)):
        return None
    rows = lake.read(monitoring_of(model), columns=["window_start", "window_end", "drifted"])
    windows = rows.group_by(["window_end"]).aggregate([("window_start", "min"), ("drifted", "any")])
    windows = windows.sort_by([("window_end", "descending")])
    ends = windows["window_end"].to_pylist()
    starts = windows["window_start_min"].to_pylist()
    drifted = windows["drifted_any"].to_pylist()
    n = 0
    while n < len(ends) and drifted[n]:
        n += 1
    return (starts[n - 1], ends[0], n) if n else None


def inputs(lake: Lake, model: str) -> Inputs:
    """The distinct logged texts of ``model``'s drifted streak; MonitorError when the model
    is not drifted or its inputs were logged without their text."""
    found = streak(lake, model)
    if found is None:
        raise MonitorError(
            f"{model} is not drifted: its newest checked window (`harvest monitor {model}`) "
            "is steady, so there are no drifted inputs to label"
        )
    start, end, windows = found
    table = predictions_of(model)
    data = lake.dataset(table)
    at = pc.field("at")
    with lake.readable(table):
        rows = data.to_table(
            columns=[c for c in ("at", "text") if c in data.schema.names],
            filter=(at >= pa.scalar(start)) & (at <= pa.scalar(end)),
        )
    rows = rows.sort_by("at")
    texts = rows["text"].to_pylist() if "text" in rows.column_names else []
    kept = [str(t) for t in texts if t]
    if not kept:
        raise MonitorError(
            f"the {rows.num_rows} predictions in {model}'s {windows} drifted window(s) were "
            f"logged without their text: set {LOG_TEXT} to label what the model meets"
        )
    return Inputs(model, start, end, windows, rows.num_rows, list(dict.fromkeys(kept)))


def admit(lake: Lake, recipe: Recipe, found: Inputs) -> list[dict[str, Any]]:
    """``found``'s texts as curated rows of ``recipe``'s source, appended where new; the
    rows for a push (``row_id``, ``url``, ``text``). The caller holds the curate lock."""
    field = recipe.text_field
    rows = []
    for text in found.texts:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        rows.append(
            {
                "row_id": content_sha256({field: text}),
                "url": f"{LIVE}{found.model}/{digest}",
                "text": text,
            }
        )
    table = f"curated/{recipe.name}"
    have: set[str] = set()
    if lake.exists(table):
        ids = pa.array([r["row_id"] for r in rows], pa.string())
        with lake.readable(table):
            present = lake.dataset(table).to_table(
                columns=["content_sha256"], filter=pc.field("content_sha256").isin(ids)
            )
        have = set(present["content_sha256"].to_pylist())
    new = [r for r in rows if r["row_id"] not in have]
    if new:
        now = datetime.now(UTC)
        lake.append(
            table,
            pa.table(
                {
                    "content_sha256": [r["row_id"] for r in new],
                    "source": [recipe.name] * len(new),
                    "url": [r["url"] for r in new],
                    field: [r["text"] for r in new],
                    "curated_at": pa.array([now] * len(new), pa.timestamp("us", tz="UTC")),
                }
            ),
        )
    return rows
