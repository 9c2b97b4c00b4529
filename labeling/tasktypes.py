"""Task types: what an annotator gives a task, and how that value travels.

Each type knows its Label Studio label config, the result a model's output becomes when it is
sent as a prediction, how an annotation's result reads back into one value, and the Arrow
type that value has in the lake.

- ``single``: one class per task (``<Choices choice="single">``); value ``str``
- ``multi``: any number of classes (``<Choices choice="multiple">``); value ``list[str]``,
  sorted and without repeats, so two annotations with the same set compare equal
- ``spans``: labelled spans of the text, named entities (``<Labels>`` over ``<Text>``); value
  a list of ``{start, end, label, text}`` sorted by position. An annotation with no span is a
  value too (the text names nothing), unlike a choice task with no choice.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any, ClassVar, TypedDict
from xml.sax.saxutils import quoteattr

import pyarrow as pa

from ingestion.errors import ConfigurationError

FROM_NAME = "label"
TO_NAME = "text"


class Span(TypedDict):
    start: int
    end: int
    label: str
    text: str


SPAN_TYPE = pa.struct(
    [("start", pa.int64()), ("end", pa.int64()), ("label", pa.string()), ("text", pa.string())]
)
# columns every labels/<source> and annotations/<source> row has, whatever the type
BASE_FIELDS = [
    ("task_id", pa.int64()),
    ("annotation_id", pa.int64()),
    ("row_id", pa.string()),
    ("url", pa.string()),
]


class TaskTypeError(ConfigurationError):
    pass


class TaskType:
    name: ClassVar[str]
    value_type: ClassVar[pa.DataType]

    def label_config(self, classes: Sequence[str]) -> str:
        raise NotImplementedError

    def result(self, value: Any, text: str | None = None) -> list[dict[str, Any]]:
        """The result list of an annotation or prediction that gives ``value``."""
        raise NotImplementedError

    def parse(self, result: Any) -> Any:
        """The value an annotation's result gives, or None when it gives none."""
        raise NotImplementedError

    def label_columns(self, value: Any) -> dict[str, Any]:
        """The value as the type-specific columns of labels/<source>."""
        raise NotImplementedError

    def matches(self, config: str) -> bool:
        """Whether a project's label config is one this type reads."""
        control = _control(config)
        return control is not None and self._matches(control)

    def _matches(self, control: ET.Element) -> bool:
        raise NotImplementedError

    def prediction(
        self,
        output: Any,
        score: float | None = None,
        model_version: str | None = None,
        text: str | None = None,
    ) -> dict[str, Any]:
        """A task's ``predictions`` entry from a model output (see :meth:`result`)."""
        pred: dict[str, Any] = {"result": self.result(output, text)}
        if score is not None:
            pred["score"] = float(score)
        if model_version is not None:
            pred["model_version"] = model_version
        return pred

    @property
    def labels_schema(self) -> pa.Schema:
        """labels/<source>: one row per labelled task, its latest live annotation."""
        return pa.schema(
            [
                *BASE_FIELDS,
                ("label", pa.string()),
                *self._extra_label_fields(),
                ("annotator", pa.int64()),
                ("updated_at", pa.string()),
            ]
        )

    def _extra_label_fields(self) -> list[tuple[str, pa.DataType]]:
        return []

    @property
    def annotations_schema(self) -> pa.Schema:
        """annotations/<source>: one row per live annotation, for agreement."""
        return pa.schema(
            [
                *BASE_FIELDS,
                ("annotator", pa.int64()),
                ("value", self.value_type),
                ("updated_at", pa.string()),
            ]
        )

    def __repr__(self) -> str:
        return f"<task type {self.name}>"


class _Choices(TaskType):
    multiple: ClassVar[bool]

    def label_config(self, classes: Sequence[str]) -> str:
        choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
        mode = "multiple" if self.multiple else "single"
        return (
            f'<View><Text name="{TO_NAME}" value="$text"/>'
            f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="{mode}" showInline="true">'
            f"{choices}</Choices></View>"
        )

    def _choices(self, value: Any) -> list[str]:
        raise NotImplementedError

    def result(self, value: Any, text: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "choices",
                "value": {"choices": self._choices(value)},
            }
        ]

    def chosen(self, result: Any) -> list[str]:
        out: list[str] = []
        for item in _items(result):
            if item.get("from_name") == FROM_NAME and item.get("type") == "choices":
                value = item.get("value")
                choices = value.get("choices") if isinstance(value, dict) else None
                out.extend(str(c) for c in choices or [])
        return out

    def _matches(self, control: ET.Element) -> bool:
        mode = control.get("choice", "single")
        return control.tag == "Choices" and (mode == "multiple") == self.multiple


class SingleLabel(_Choices):
    name = "single"
    value_type = pa.string()
    multiple = False

    def _choices(self, value: Any) -> list[str]:
        if not isinstance(value, str):
            raise TaskTypeError(f"a single-label value is one class name, got {value!r}")
        return [value]

    def parse(self, result: Any) -> str | None:
        chosen = self.chosen(result)
        return chosen[0] if chosen else None

    def label_columns(self, value: Any) -> dict[str, Any]:
        return {"label": value}


class MultiLabel(_Choices):
    name = "multi"
    value_type = pa.list_(pa.string())
    multiple = True

    def _choices(self, value: Any) -> list[str]:
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise TaskTypeError(f"a multi-label value is a list of class names, got {value!r}")
        return sorted(set(value))

    def parse(self, result: Any) -> list[str] | None:
        chosen = self.chosen(result)
        return sorted(set(chosen)) if chosen else None

    def label_columns(self, value: Any) -> dict[str, Any]:
        # no single class says what a set of them means: consumers of one label see none
        return {"label": None, "labels": value}

    def _extra_label_fields(self) -> list[tuple[str, pa.DataType]]:
        return [("labels", self.value_type)]


class Spans(TaskType):
    name = "spans"
    value_type = pa.list_(SPAN_TYPE)

    def label_config(self, classes: Sequence[str]) -> str:
        labels = "".join(f"<Label value={quoteattr(c)}/>" for c in classes)
        return (
            f'<View><Labels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</Labels>'
            f'<Text name="{TO_NAME}" value="$text"/></View>'
        )

    def result(self, value: Any, text: str | None = None) -> list[dict[str, Any]]:
        """``value``: (start, end, label) triples or Span mappings; ``text`` fills each
        span's text where the value does not carry it."""
        out = []
        for span in self.spans(value, text):
            region = f"{span['start']}:{span['end']}:{span['label']}".encode()
            out.append(
                {
                    # Label Studio keys regions by id; one derived from the span keeps a
                    # prediction and the annotation made from it pointing at the same region
                    "id": hashlib.sha1(region).hexdigest()[:10],
                    "from_name": FROM_NAME,
                    "to_name": TO_NAME,
                    "type": "labels",
                    "value": {
                        "start": span["start"],
                        "end": span["end"],
                        "text": span["text"],
                        "labels": [span["label"]],
                    },
                }
            )
        return out

    def spans(self, value: Any, text: str | None = None) -> list[Span]:
        """``value`` as sorted Spans, checked."""
        out = []
        for item in value:
            if isinstance(item, dict):
                start, end, label = item.get("start"), item.get("end"), item.get("label")
                piece = item.get("text")
            elif isinstance(item, (tuple, list)) and len(item) == 3:
                (start, end, label), piece = item, None
            else:
                raise TaskTypeError(f"a span is (start, end, label), got {item!r}")
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end):
                raise TaskTypeError(f"span {item!r}: start and end are offsets, start <= end")
            if not isinstance(label, str):
                raise TaskTypeError(f"span {item!r}: the label is a class name")
            if piece is None:
                piece = text[start:end] if text is not None else ""
            out.append(Span(start=start, end=end, label=label, text=str(piece)))
        return sorted(out, key=lambda s: (s["start"], s["end"], s["label"]))

    def parse(self, result: Any) -> list[Span]:
        spans: list[Span] = []
        for item in _items(result):
            if item.get("from_name") != FROM_NAME or item.get("type") != "labels":
                continue
            value = item.get("value")
            if not isinstance(value, dict):
                continue
            start, end = value.get("start"), value.get("end")
            if not (isinstance(start, int) and isinstance(end, int)):
                continue
            for label in value.get("labels") or []:
                spans.append(
                    Span(start=start, end=end, label=str(label), text=str(value.get("text", "")))
                )
        return sorted(spans, key=lambda s: (s["start"], s["end"], s["label"]))

    def label_columns(self, value: Any) -> dict[str, Any]:
        return {"label": None, "spans": value}

    def _extra_label_fields(self) -> list[tuple[str, pa.DataType]]:
        return [("spans", self.value_type)]

    def _matches(self, control: ET.Element) -> bool:
        return control.tag == "Labels"


SINGLE = SingleLabel()
MULTI = MultiLabel()
SPANS = Spans()
TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (SINGLE, MULTI, SPANS)}


def task_type(kind: str | TaskType) -> TaskType:
    """The task type called ``kind`` (a TaskType is passed through)."""
    if isinstance(kind, TaskType):
        return kind
    try:
        return TASK_TYPES[kind]
    except KeyError:
        raise TaskTypeError(
            f"unknown task type {kind!r} (known: {', '.join(TASK_TYPES)})"
        ) from None


def _items(result: Any) -> list[dict[str, Any]]:
    return [r for r in result if isinstance(r, dict)] if isinstance(result, list) else []


def _control(config: str) -> ET.Element | None:
    """The control tag named FROM_NAME in a label config."""
    try:
        root = ET.fromstring(config)
    except ET.ParseError:
        return None
    return next((el for el in root.iter() if el.get("name") == FROM_NAME), None)
