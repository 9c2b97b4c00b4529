"""`GET /labels/{source}` for real on loopback, for each task type: labels counted per class
as the type means them (a multi-label or span row has no single ``label``), and the same
figures as the dashboard's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from harvest.recipe import load_recipe
from harvest.service import summary
from ingestion.lake import Lake
from labeling.tasktypes import MULTI, SINGLE, SPANS, TaskType
from tests.helpers import ROOT
from tests.service import Live

pytestmark = pytest.mark.slow
CURATED = 5  # rows of each source, the first few labelled
TEXT = "Alice met Bob in Paris."


def span(start: int, end: int, label: str) -> dict[str, Any]:
    return {"start": start, "end": end, "label": label, "text": TEXT[start:end]}


# each source: its task type, its classes, and the value of each labelled task
TOPICS = ["World", "Sports", "Business"]
SOURCES: dict[str, tuple[TaskType, list[str], list[Any]]] = {
    "one": (SINGLE, TOPICS, ["World", "Sports", "World"]),
    "many": (MULTI, TOPICS, [["Sports", "World"], ["World"], ["Business", "World"]]),
    "spans": (
        SPANS,
        ["PER", "LOC", "ORG"],
        [[span(0, 5, "PER"), span(10, 13, "PER"), span(17, 22, "LOC")], [span(17, 22, "LOC")]],
    ),
}
EXPECTED = {
    "one": {"World": 2, "Sports": 1, "Business": 0},
    # a task counts once under each class it carries
    "many": {"World": 3, "Sports": 1, "Business": 1},
    # every span counts
    "spans": {"PER": 2, "LOC": 2, "ORG": 0},
}


def write_source(live: Live, name: str) -> None:
    kind, classes, values = SOURCES[name]
    recipe = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    recipe.update(name=name, label_type=kind.name, labels=classes)
    (live.sources / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    lake = Lake(Path(live.env["HARVEST_LAKE"]))
    curated = [
        {"content_sha256": f"{name}{i}", "source": name, "body": TEXT} for i in range(CURATED)
    ]
    lake.append(f"curated/{name}", pa.Table.from_pylist(curated))
    base = {"url": None, "annotator": 1, "updated_at": "2026-01-01T00:00:00"}
    labels = [
        {**base, "task_id": i, "annotation_id": i, "row_id": f"{name}{i}", **kind.label_columns(v)}
        for i, v in enumerate(values)
    ]
    lake.overwrite(f"labels/{name}", pa.Table.from_pylist(labels, schema=kind.labels_schema))


def test_each_task_type_is_counted_per_class(live: Live) -> None:
    for name in SOURCES:
        write_source(live, name)
    (live.sources / "unlabelled.yaml").write_text(
        (live.sources / "many.yaml").read_text().replace("name: many", "name: unlabelled")
    )
    live.start()
    lake = Lake(Path(live.env["HARVEST_LAKE"]))

    for name, (kind, _, values) in SOURCES.items():
        answer = live.get(f"/labels/{name}")
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert (got["source"], got["label_type"]) == (name, kind.name)
        assert (got["curated"], got["labelled"]) == (CURATED, len(values))
        assert got["labelled_share"] == round(len(values) / CURATED, 4)
        assert got["classes"] == EXPECTED[name], name
        assert list(got["classes"]) == SOURCES[name][1]  # the recipe's order
        # the dashboard shows the same figures
        recipe = load_recipe(live.sources / f"{name}.yaml")
        assert {"source": name, **(summary.labelling(lake, name, recipe) or {})} == got

    # before any pull: the recipe's type and classes, all at zero
    got = live.get("/labels/unlabelled").json()
    assert (got["label_type"], got["labelled"], got["curated"]) == ("multi", 0, 0)
    assert got["classes"] == {"World": 0, "Sports": 0, "Business": 0}
    assert live.stop() == 0
