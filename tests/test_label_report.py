"""The label quality report, from lake tables written directly: no Label Studio server."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingestion.lake import Lake
from labeling.report import ReportError, label_report
from labeling.store import LabelStore
from labeling.tasktypes import MULTI, SINGLE, SPANS, TaskType
from tests.helpers import free_port, last_json, run_harvest

# three classes whose words never overlap: a text's class is plain from any of its words
VOCAB = {
    "Sports": "match goal team coach league score season player stadium referee cup striker",
    "Business": "market shares profit bank investor trade earnings company merger stock revenue",
    "Sci/Tech": "research lab physics genome telescope experiment scientists software chip robot",
}
FILLER = ["the", "a", "today", "reported", "new", "said", "week", "on", "in", "after", "this"]


def row_id(i: int) -> str:
    return hashlib.sha256(f"row {i}".encode()).hexdigest()


def url(i: int) -> str:
    return f"http://news.test/article/{i}"


def write_curated(lake: Lake, source: str, texts: list[str]) -> None:
    lake.append(
        f"curated/{source}",
        pa.table(
            {
                "content_sha256": [row_id(i) for i in range(len(texts))],
                "url": [url(i) for i in range(len(texts))],
                "body": texts,
            }
        ),
    )


def annotation(
    task: int, ann: int, annotator: int, value: Any, when: str = "2024-01-01T00:00:00"
) -> dict[str, Any]:
    """An annotations/<source> row; task N is curated row N."""
    return {
        "task_id": task,
        "annotation_id": ann,
        "row_id": row_id(task),
        "url": url(task),
        "annotator": annotator,
        "value": value,
        "updated_at": when,
    }


def write_annotations(lake: Lake, source: str, kind: TaskType, rows: list[dict[str, Any]]) -> None:
    LabelStore.for_source(lake, source, kind).replace(rows)


def two_annotators() -> list[dict[str, Any]]:
    """Annotators 11 and 12 on tasks 1-20; 12 disagrees on tasks 3, 7 and 15.

    11 says World on 1-10 and Sports on 11-20; 12 says Sports on 3 and 7, World on 15.
    By hand: observed 17/20 = 0.85; 11 says World 10/20, 12 says World 9/20, so chance
    agreement is 0.5 * 0.45 + 0.5 * 0.55 = 0.5 and kappa = (0.85 - 0.5) / 0.5 = 0.7.
    """
    a = {t: "World" if t <= 10 else "Sports" for t in range(1, 21)}
    b = {**a, 3: "Sports", 7: "Sports", 15: "World"}
    rows = [annotation(t, t, 11, label, "2024-01-01T10:00:00") for t, label in a.items()]
    rows += [annotation(t, 100 + t, 12, label, "2024-01-02T10:00:00") for t, label in b.items()]
    # 12 first said Sports on task 5, then World: only the later one counts
    rows.append(annotation(5, 99, 12, "Sports", "2024-01-01T12:00:00"))
    rows.append(annotation(21, 21, 11, "Business"))  # one annotation: no agreement to measure
    return rows


@pytest.fixture
def env(lake_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    # a port nothing listens on: Label Studio is down, as in an offline report
    return {
        **lake_env,
        "HARVEST_LABEL_STUDIO_PORT": str(free_port()),
        "HARVEST_LABEL_STUDIO_DATA_DIR": str(tmp_path / "ls"),
    }


def test_report_lists_disagreements_with_a_hand_computed_kappa(env: dict[str, str]) -> None:
    lake = Lake(env["HARVEST_LAKE"])
    write_curated(lake, "demo", [f"text of article {i}" for i in range(30)])
    write_annotations(lake, "demo", SINGLE, two_annotators())

    proc = run_harvest(["label", "report", "demo"], env)
    summary = last_json(proc.stdout)

    p = summary["progress"]
    assert (p["curated"], p["labelled"], p["annotations"]) == (30, 21, 42)
    assert p["tasks"] == "unknown" and "not reachable" in p["tasks_note"]
    assert p["labelled_share"] == pytest.approx(0.7)
    # labels/<source> keeps each task's latest annotation: 12's, and 11's on task 21
    assert p["classes"] == {"World": 9, "Sports": 11, "Business": 1, "Sci/Tech": 0}
    assert p["annotators"] == {"11": 21, "12": 21}

    a = summary["agreement"]
    assert a["computed"] and a["method"] == "cohen's kappa"
    assert (a["tasks"], a["annotators"]) == (20, 2)
    assert a["observed"] == pytest.approx(0.85)
    assert a["kappa"] == pytest.approx(0.7)
    assert [d["task_id"] for d in a["disagreements"]] == [3, 7, 15]
    first = a["disagreements"][0]
    assert first["labels"] == {"11": "World", "12": "Sports"}
    assert (first["url"], first["row_id"]) == (url(3), row_id(3))

    # one Business label cannot be cross-validated in 5 folds: said, not crashed on
    s = summary["suspected_errors"]
    assert not s["computed"]
    assert "'Business' has 1" in s["reason"] and "--folds" in s["reason"]

    html, data = Path(str(summary["report"])), Path(str(summary["json"]))
    assert html.parent == Path(env["HARVEST_REPORTS"]) / "labels"
    assert html.name.startswith("demo-") and html.suffix == ".html"
    assert data == html.with_suffix(".json")
    assert json.loads(data.read_text()) == summary
    page = html.read_text()
    for task in (3, 7, 15):
        assert url(task) in page
    assert url(4) not in page  # agreed on: not a disagreement
    assert Path(str(summary["chart"])).read_bytes().startswith(b"\x89PNG")
    assert f"report: {html}" in proc.stderr


def test_report_refuses_an_unknown_source_and_a_source_without_labels(
    env: dict[str, str],
) -> None:
    proc = run_harvest(["label", "report", "nope"], env, check=False)
    assert proc.returncode == 2
    assert "no recipe for source 'nope'" in proc.stderr
    proc = run_harvest(["label", "report", "demo"], env, check=False)
    assert proc.returncode == 2
    assert "no labels yet for 'demo'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (Path(env["HARVEST_REPORTS"]) / "labels").exists()


def separable(
    seed: int, per_class: int = 40, flips: int = 6
) -> tuple[list[str], list[str], list[str], set[int]]:
    """Texts of three classes, their true classes, and labels with ``flips`` of them wrong."""
    rng = random.Random(seed)
    texts, truth = [], []
    for label, words in VOCAB.items():
        for _ in range(per_class):
            texts.append(" ".join(rng.sample(words.split(), 8) + rng.sample(FILLER, 4)))
            truth.append(label)
    given = list(truth)
    flipped = rng.sample(range(len(texts)), flips)
    for i in flipped:
        given[i] = rng.choice([c for c in VOCAB if c != truth[i]])
    return texts, truth, given, set(flipped)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipped_labels_are_flagged_as_suspected_errors(tmp_path: Path, seed: int) -> None:
    texts, truth, given, flipped = separable(seed)
    lake = Lake(tmp_path / "lake")
    write_curated(lake, "news", texts)
    rows = [annotation(i, i + 1, 1, label) for i, label in enumerate(given)]
    # labels of rows no longer curated: left out of the check, and counted
    rows += [annotation(500 + k, 900 + k, 1, "Sports") for k in range(2)]
    write_annotations(lake, "news", SINGLE, rows)

    summary = label_report(lake, "news", tmp_path / "reports", SINGLE, "body", folds=5)

    s = summary["suspected_errors"]
    assert s["computed"], s
    assert (s["rows"], s["left_out"], s["folds"]) == (len(texts), 2, 5)
    flagged = {i["task_id"] for i in s["issues"]}
    assert len(flagged & flipped) >= 4, (sorted(flagged), sorted(flipped))  # most of 6
    assert len(flagged - flipped) <= 2  # and few of the 114 right ones
    for issue in s["issues"]:
        if issue["task_id"] in flipped:
            assert issue["given"] == given[issue["task_id"]]
            assert issue["suggested"] == truth[issue["task_id"]]
            assert issue["text"] == texts[issue["task_id"]]
    confidences = [i["self_confidence"] for i in s["issues"]]
    assert confidences == sorted(confidences)  # most suspect first
    # one annotator: nothing to agree on, and the report says so
    assert not summary["agreement"]["computed"]
    assert "two annotators" in summary["agreement"]["reason"]
    page = Path(summary["report"]).read_text()
    assert all(url(t) in page for t in flagged)
    assert "Suspected label errors" in page


def test_too_few_labels_give_a_reason_instead_of_a_crash(tmp_path: Path) -> None:
    texts, _, given, _ = separable(0, per_class=10, flips=0)
    lake = Lake(tmp_path / "lake")
    write_curated(lake, "news", texts)
    few = [0, 1, 2, 10, 11, 12]  # three Sports, three Business
    write_annotations(lake, "news", SINGLE, [annotation(i, i + 1, 1, given[i]) for i in few])

    summary = label_report(lake, "news", tmp_path / "reports", SINGLE, "body", folds=5)
    s = summary["suspected_errors"]
    assert not s["computed"]
    assert s["reason"].startswith("too few labels: 6 labelled rows")
    assert summary["progress"]["classes"] == {"Sports": 3, "Business": 3}
    assert Path(summary["report"]).exists() and Path(summary["json"]).exists()
    assert "Not computed: too few labels" in Path(summary["report"]).read_text()

    one_class = [annotation(i, i + 1, 1, "Sports") for i in range(10)]
    write_annotations(lake, "news", SINGLE, one_class)
    s = label_report(lake, "news", tmp_path / "reports", SINGLE, "body")["suspected_errors"]
    assert not s["computed"] and "every labelled row is 'Sports'" in s["reason"]
    s = label_report(lake, "news", tmp_path / "reports", SINGLE, "title")["suspected_errors"]
    assert not s["computed"] and "no column 'title'" in s["reason"]


def test_no_labels_table_is_an_error(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    write_curated(lake, "news", ["some text"])
    with pytest.raises(ReportError, match="no labels yet for 'news'"):
        label_report(lake, "news", tmp_path / "reports")
    # a table of another task type than asked for is named, not misread
    write_annotations(lake, "news", MULTI, [annotation(0, 1, 1, ["Sports"])])
    with pytest.raises(ReportError, match="does not hold 'single' labels"):
        label_report(lake, "news", tmp_path / "reports", SINGLE)


def test_multi_label_agreement_is_per_class_kappa_and_jaccard(tmp_path: Path) -> None:
    """Annotators 1 and 2 on five tasks:

    task: 1 {x,y} {x,y} | 2 {x} {x,y} | 3 {y} {x} | 4 {x} {x} | 5 {y} {y}

    Jaccard per task 1, 1/2, 0, 1, 1: mean 0.7; the same set on 3 of 5.
    Class x, 1: yes yes no yes no, 2: yes yes yes yes no: observed 0.8, chance
    0.6 * 0.8 + 0.4 * 0.2 = 0.56, kappa 0.24 / 0.44. Class y, 1: yes no yes no yes,
    2: yes yes no no yes: observed 0.6, chance 0.6 * 0.6 + 0.4 * 0.4 = 0.52, kappa 1/6.
    """
    one = {1: ["x", "y"], 2: ["x"], 3: ["y"], 4: ["x"], 5: ["y"]}
    two = {1: ["x", "y"], 2: ["x", "y"], 3: ["x"], 4: ["x"], 5: ["y"]}
    rows = [annotation(t, t, 1, v) for t, v in one.items()]
    rows += [annotation(t, 10 + t, 2, v, "2024-01-02T00:00:00") for t, v in two.items()]
    lake = Lake(tmp_path / "lake")
    write_annotations(lake, "tags", MULTI, rows)

    summary = label_report(lake, "tags", tmp_path / "reports", MULTI, classes=["x", "y", "z"])
    a = summary["agreement"]
    assert a["computed"] and a["tasks"] == 5
    assert a["jaccard"] == pytest.approx(0.7)
    assert a["observed"] == pytest.approx(0.6)
    assert a["per_class"]["x"]["kappa"] == pytest.approx(0.24 / 0.44)
    assert a["per_class"]["y"]["kappa"] == pytest.approx(1 / 6)
    assert a["kappa"] == pytest.approx((0.24 / 0.44 + 1 / 6) / 2)
    assert [(d["task_id"], d["jaccard"]) for d in a["disagreements"]] == [(3, 0.0), (2, 0.5)]
    assert a["disagreements"][1]["labels"] == {"1": ["x"], "2": ["x", "y"]}
    # a task counts once for each class it carries; z was never chosen
    assert summary["progress"]["classes"] == {"x": 4, "y": 3, "z": 0}
    assert summary["progress"]["curated"] == 0  # no curated table: no text
    assert not summary["suspected_errors"]["computed"]


def test_span_agreement_is_not_computed_and_says_why(tmp_path: Path) -> None:
    span = {"start": 0, "end": 5, "label": "ORG", "text": "Acme "}
    rows = [annotation(1, 1, 1, [span]), annotation(1, 2, 2, [])]
    lake = Lake(tmp_path / "lake")
    write_annotations(lake, "ents", SPANS, rows)
    summary = label_report(lake, "ents", tmp_path / "reports", SPANS)
    assert not summary["agreement"]["computed"]
    assert "spans" in summary["agreement"]["reason"]
    assert summary["progress"]["annotations"] == 2
