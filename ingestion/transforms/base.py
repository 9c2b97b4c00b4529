"""What every transform step is, and the checks their options share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa

from ingestion.errors import ConfigurationError


class StepError(ConfigurationError):
    """A step or option that cannot run; ``key`` says which, relative to the step list."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)


class Step(ABC):
    """One job over a batch of rows: reads ``inputs``, adds or fills ``outputs`` (columns a
    later step or an expectation may use), and keeps every row."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_options(cls, options: dict[str, Any], text_field: str) -> Step: ...

    @property
    @abstractmethod
    def inputs(self) -> tuple[str, ...]: ...

    @property
    @abstractmethod
    def outputs(self) -> tuple[str, ...]: ...

    @abstractmethod
    def __call__(self, df: pd.DataFrame) -> pd.DataFrame: ...


def check_keys(options: dict[str, Any], known: set[str]) -> None:
    for key in options:
        if key not in known:
            raise StepError(
                str(key), f"unknown option (expected one of {', '.join(sorted(known))})"
            )


def column_name(options: dict[str, Any], key: str, default: str) -> str:
    value = options.get(key, default)
    if not isinstance(value, str) or not value:
        raise StepError(key, "a column name")
    return value


def column_names(options: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = options.get(key, list(default))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise StepError(key, "a non-empty list of column names")
    return tuple(value)


def values(df: pd.DataFrame, column: str) -> list[Any]:
    """A column as Python values, None where missing (pandas would give pd.NA)."""
    out: list[Any] = pa.array(df[column], from_pandas=True).to_pylist()
    return out


def strings(values: list[str | None]) -> pd.api.extensions.ExtensionArray:
    return pd.array(values, dtype=pd.ArrowDtype(pa.string()))
