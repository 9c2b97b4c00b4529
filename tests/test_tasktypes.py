"""Task types: label configs, prediction results and their reading back, without a server."""

from __future__ import annotations

import pyarrow as pa
import pytest

from labeling.tasktypes import MULTI, SINGLE, SPANS, TASK_TYPES, TaskTypeError, task_type

TEXT = "Alice met Bob in Paris."
CLASSES = ["PER", "LOC", "ORG"]


def test_a_task_type_is_found_by_name() -> None:
    assert list(TASK_TYPES) == ["single", "multi", "spans"]
    assert task_type("multi") is MULTI and task_type(SPANS) is SPANS
    with pytest.raises(TaskTypeError, match="unknown task type 'tree'.*single, multi, spans"):
        task_type("tree")


@pytest.mark.parametrize(
    ("kind", "value", "back"),
    [
        (SINGLE, "LOC", "LOC"),
        (MULTI, ["PER", "LOC", "PER"], ["LOC", "PER"]),
        (
            SPANS,
            [(17, 22, "LOC"), (0, 5, "PER")],
            [
                {"start": 0, "end": 5, "label": "PER", "text": "Alice"},
                {"start": 17, "end": 22, "label": "LOC", "text": "Paris"},
            ],
        ),
    ],
)
def test_a_prediction_reads_back_as_the_value(kind: object, value: object, back: object) -> None:
    from labeling.tasktypes import TaskType

    assert isinstance(kind, TaskType)
    pred = kind.prediction(value, score=0.75, model_version="m1", text=TEXT)
    assert (pred["score"], pred["model_version"]) == (0.75, "m1")
    assert kind.parse(pred["result"]) == back
    # the value fits the lake column of its type
    assert pa.array([back], type=kind.value_type).to_pylist() == [back]
    assert kind.matches(kind.label_config(CLASSES))
    others = [t for t in TASK_TYPES.values() if t is not kind]
    assert not any(t.matches(kind.label_config(CLASSES)) for t in others)


def test_no_choice_is_no_value_but_no_span_is_one() -> None:
    assert SINGLE.parse([]) is None
    assert MULTI.parse(MULTI.result([])) is None
    assert SPANS.parse([]) == []


def test_results_of_other_controls_are_ignored() -> None:
    foreign = [{"from_name": "sentiment", "type": "choices", "value": {"choices": ["x"]}}]
    assert SINGLE.parse(foreign + SINGLE.result("ORG")) == "ORG"
    assert SINGLE.parse("not a list") is None


@pytest.mark.parametrize(
    ("kind", "value", "words"),
    [
        (SINGLE, ["PER"], "one class name"),
        (MULTI, "PER", "list of class names"),
        (SPANS, [(5, 2, "PER")], "start <= end"),
        (SPANS, [(0, 2)], "(start, end, label)"),
    ],
)
def test_a_bad_model_output_is_named(kind: object, value: object, words: str) -> None:
    from labeling.tasktypes import TaskType

    assert isinstance(kind, TaskType)
    with pytest.raises(TaskTypeError, match=words.replace("(", r"\(").replace(")", r"\)")):
        kind.result(value)


def test_label_schemas_keep_the_single_label_column() -> None:
    assert SINGLE.labels_schema.field("label").type == pa.string()
    assert MULTI.labels_schema.field("labels").type == pa.list_(pa.string())
    assert SPANS.labels_schema.field("spans").type == SPANS.value_type
    for kind in TASK_TYPES.values():
        assert kind.annotations_schema.names == [
            "task_id",
            "annotation_id",
            "row_id",
            "url",
            "annotator",
            "value",
            "updated_at",
        ]
