"""The labelling section of a recipe: the classes, the task type, what the labelling model
reads, and what a scheduled run does for labelling (the label push, the retrain).

The values allowed are labeling's own: the task types of ``labeling.tasktypes``, the
feature kinds of ``labeling.features`` and the strategies of ``labeling.strategies``.
``labeling.features`` loads scikit-learn, so it is imported only when a recipe names its
features; one that does not leaves them to the labelling model (``labeling.model.fit``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field as Described
from pydantic.dataclasses import dataclass

from ingestion.sections import SECTION, Bounded, OneOf, Plain, Section, problem
from labeling.strategies import STRATEGIES
from labeling.tasktypes import SINGLE, TASK_TYPES

ON_DRIFT = "on_drift"


def _retrain(value: Any) -> bool | Literal["on_drift"]:
    if value is True or value is False or value == ON_DRIFT:
        return value  # type: ignore[no-any-return]
    raise problem(f"true, false or {ON_DRIFT!r}, got {value!r}")


Retrain = Annotated[
    bool | Literal["on_drift"],
    Plain(_retrain, {"oneOf": [{"type": "boolean"}, {"const": ON_DRIFT}]}),
]


def _feature_kinds() -> tuple[str, ...]:
    from labeling import features

    return features.KINDS


@dataclass(frozen=True, kw_only=True, config=SECTION)
class LabelSection(Section):
    """How a source's rows are labelled."""

    labels: list[str] = Described(
        default_factory=list, description="a list of class names (span labels for spans)"
    )
    label_type: Annotated[str, OneOf(tuple(TASK_TYPES))] = Described(
        default=SINGLE.name,
        description="the task type: single (one class), multi (any number of classes) or "
        "spans (labelled spans of the text)",
    )
    # what the labelling model reads (labeling.features); tfidf alone for text the English
    # sentence encoder does not know; None: the model's own default (features.DEFAULT)
    label_features: Annotated[str, OneOf(_feature_kinds)] | None = Described(
        default=None,
        description="what the labelling model reads: tfidf (n-grams alone) or tfidf+minilm "
        "(with a sentence embedding); none: the model's default",
    )


@dataclass(frozen=True, config=SECTION)
class LabelRun(Section):
    """The label push a scheduled run ends with."""

    push: Annotated[int, Bounded(whole=True, ge=1)] = Described(
        description="a whole number >= 1: rows pushed to Label Studio a run"
    )
    strategy: Annotated[str, OneOf(tuple(STRATEGIES))] | None = Described(
        default=None,
        description="the active-learning strategy that picks them (default: the push command's)",
    )


@dataclass(frozen=True, kw_only=True, config=SECTION)
class LabelSchedule(Section):
    """What a scheduled run does for labelling once the crawl is curated."""

    label: LabelRun | None = Described(
        default=None, description="a label push after each run: push (rows) and strategy"
    )
    retrain: Retrain = Described(
        default=False,
        description="true: the labelling model is retrained after each run; "
        f"{ON_DRIFT!r}: when the live inputs of the source's served model drift, a label "
        "push and a retrain of that model are queued; false: neither",
    )

    @property
    def push(self) -> int | None:
        """Rows a run pushes to Label Studio; None: no push."""
        return self.label.push if self.label else None

    @property
    def strategy(self) -> str | None:
        """None: the push command's default."""
        return self.label.strategy if self.label else None
