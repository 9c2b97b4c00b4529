"""The gate's section of a recipe: the expectations rows must meet, the batch-level gates
and the transform steps run before either (``ingestion.transforms``).

``Rule`` and ``BatchSpec`` are what the gate runs (``validation.suite``): the section is
read straight into them. What the section cannot check alone, because it names the
crawl's fields (an expectation's column, the fields a batch's drift compares, the columns
a step reads), ``harvest.recipe`` checks once both sections are sound.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, ValidationInfo
from pydantic import Field as Described
from pydantic.dataclasses import dataclass
from pydantic.functional_validators import PlainValidator
from pydantic.json_schema import WithJsonSchema

from ingestion.sections import (
    SECTION,
    Bounded,
    DateFormat,
    Number,
    OneOf,
    Section,
    null_is,
    problem,
    problems_error,
)
from ingestion.transforms import DEFAULT_STEPS, STEPS, Step, StepError, parse_steps

# what a rule may expect of a column (validation.expectations runs each)
EXPECTATIONS = ("not_null", "unique", "length_between", "date_parses", "between")
# the validation context key that names the column steps work on unless told otherwise
TEXT_FIELD = "text_field"


@dataclass(frozen=True, config=SECTION)
class Rule(Section):
    """A column must meet: not_null, unique, length_between, date_parses or between."""

    shape: ClassVar[str] = "a mapping with expect and column"

    expect: Annotated[str, OneOf(EXPECTATIONS, "expectation")] = Described(
        description="what the column must meet: " + ", ".join(EXPECTATIONS)
    )
    column: str = Described(description="a field of the recipe, or a column a step writes")
    min: Number | None = Described(
        default=None, description="a number: the least value (between) or length (length_between)"
    )
    max: Number | None = Described(
        default=None,
        description="a number: the greatest value (between) or length (length_between)",
    )
    format: DateFormat | None = Described(
        default=None, description="a strptime format such as '%Y-%m-%d' (date_parses)"
    )


Ratio = Annotated[float, Bounded(gt=0, le=1)]
Share = Annotated[float, Bounded(ge=0, le=1)]


@dataclass(frozen=True, config=SECTION)
class NumericDrift(Section):
    """How far a batch's fields may move from the last good batch's."""

    fields: tuple[str, ...] | None = Described(
        default=None,
        description="a non-empty list of fields to compare: int and float ones by value, "
        "text and list ones by length (default: every int and float field)",
    )
    max_mean_shift: Annotated[float, Bounded(gt=0)] | None = Described(
        default=None, description="a positive number: how far the mean may move, relative to it"
    )
    min_ks_pvalue: Annotated[float, Bounded(gt=0, lt=1)] | None = Described(
        default=None,
        description="a number in (0, 1): the least Kolmogorov-Smirnov p-value, below which "
        "the distribution has changed",
    )

    def __post_init__(self) -> None:
        if self.max_mean_shift is None and self.min_ks_pvalue is None:
            raise problem("name max_mean_shift, min_ks_pvalue or both")
        if self.fields is not None and not self.fields:
            said = "a non-empty list of fields (int and float ones; text and list ones by length)"
            raise problems_error("NumericDrift", [(("fields",), said, None)])


@dataclass(frozen=True, config=SECTION)
class BatchSpec(Section):
    """Checks on a whole batch against the source's last good batch; a batch failing one is
    held back whole. None turns a gate off."""

    min_rows_ratio: Ratio | None = Described(
        default=None,
        description="a number in (0, 1]: the least share of the last good batch's rows "
        "a batch must have",
    )
    max_null_rate_increase: Share | None = Described(
        default=None,
        description="a number in [0, 1]: how much a field's share of nulls may grow",
    )
    numeric_drift: NumericDrift | None = Described(
        default=None, description="how far fields may drift from the last good batch"
    )

    def __post_init__(self) -> None:
        if (self.min_rows_ratio, self.max_null_rate_increase, self.numeric_drift) == (None,) * 3:
            raise problem(
                "name at least one of max_null_rate_increase, min_rows_ratio, numeric_drift"
            )

    @property
    def drift_fields(self) -> tuple[str, ...]:
        """The fields compared (the recipe's int and float ones when it names none: see
        ``harvest.recipe``, which fills them in)."""
        drift = self.numeric_drift
        return drift.fields or () if drift is not None else ()

    @property
    def max_mean_shift(self) -> float | None:
        return self.numeric_drift.max_mean_shift if self.numeric_drift else None

    @property
    def min_ks_pvalue(self) -> float | None:
        return self.numeric_drift.min_ks_pvalue if self.numeric_drift else None


def _steps(value: Any, info: ValidationInfo) -> tuple[Step, ...]:
    """The steps from ``steps:`` (None: the defaults), each checked; they work on the text
    field unless their options name another column."""
    if isinstance(value, tuple) and all(isinstance(s, Step) for s in value):
        return value
    text_field = (info.context or {}).get(TEXT_FIELD) or info.data.get(TEXT_FIELD) or ""
    try:
        return parse_steps(value, text_field)
    except StepError as exc:
        raise problems_error("steps", [(_loc(exc.key), exc.problem, None)]) from None


def _loc(key: str) -> tuple[str | int, ...]:
    """A StepError's key, ``[1].column``, as a location: ``(1, "column")``."""
    return tuple(int(i) if i else name for i, name in re.findall(r"\[(\d+)\]|([^.\[\]]+)", key))


def _steps_schema() -> dict[str, Any]:
    one = {"type": "string", "enum": list(STEPS)}
    options = {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {name: {"type": ["object", "null"]} for name in STEPS},
        "additionalProperties": False,
    }
    return {"type": ["array", "null"], "items": {"anyOf": [one, options]}}


Steps = Annotated[tuple[Step, ...], PlainValidator(_steps), WithJsonSchema(_steps_schema())]


@dataclass(
    frozen=True, kw_only=True, config=ConfigDict(extra="forbid", arbitrary_types_allowed=True)
)
class GateSection(Section):
    """The gate's section of a recipe: what rows and batches must meet to be curated."""

    expectations: Annotated[list[Rule], null_is(list, list[Rule])] = Described(
        default_factory=list,
        description="a list of rules the rows must meet, on top of harvest's own (a url, "
        "unique; the text field, not empty; the required fields; dates that parse)",
    )
    batch: BatchSpec | None = Described(
        default=None, description="checks on each batch against the source's last good batch"
    )
    # transforms run by the gate before it checks rows (ingestion/transforms)
    steps: Steps = Described(
        default=None,
        validate_default=True,
        description="a list of transform steps run before the gate checks a batch, each a "
        "name or a mapping of one name to its options (default: " + ", ".join(DEFAULT_STEPS) + ")",
    )


@dataclass(frozen=True, config=SECTION)
class MonitorSpec(Section):
    """How the live inputs of a model trained on the source's labels are compared with its
    training split (``harvest monitor``): a window of predictions at a time, through the
    tests of ``harvest drift``."""

    window: Annotated[int, Bounded(whole=True, ge=20)] = Described(
        default=1000, description="a whole number >= 20: the predictions compared at a time"
    )
    alpha: Annotated[float, Bounded(gt=0, lt=1)] = Described(
        default=0.01,
        description="a number in (0, 1): the p-value below which a feature has changed",
    )
    min_effect: Share = Described(
        default=0.1,
        description="a number in [0, 1]: the least Kolmogorov-Smirnov statistic or "
        "Jensen-Shannon distance that counts as drift, however significant",
    )


@dataclass(frozen=True, kw_only=True, config=SECTION)
class MonitorSection(Section):
    """The monitoring section of a recipe: when its model's live inputs have drifted."""

    monitor: MonitorSpec = Described(
        default_factory=MonitorSpec,
        description="how the served model's live inputs are compared with its training split",
    )
