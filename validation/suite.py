"""The rules a source's rows must meet: the recipe's own plus harvest's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import pyarrow as pa

from ingestion.transforms import Step

# the recipe's gate section is read straight into these (validation.section)
from validation.section import BatchSpec, Rule

__all__ = ["DEFAULT_MAX_TEXT", "BatchSpec", "GateSpec", "Rule", "curated_rows", "rule_name"]

DEFAULT_MAX_TEXT = 100_000


@dataclass(frozen=True)
class GateSpec:
    """What the gate needs to know about a source, independent of how it was crawled."""

    text_field: str
    required: list[str] = field(default_factory=list)
    dates: dict[str, str | None] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    batch: BatchSpec | None = None
    steps: tuple[Step, ...] = ()  # transforms run on a batch before its rows are checked

    def all_rules(self) -> list[Rule]:
        rules = [
            Rule("not_null", "url"),
            Rule("unique", "url"),
            Rule("not_null", self.text_field),
            Rule("length_between", self.text_field, 1, DEFAULT_MAX_TEXT),
        ]
        rules += [Rule("not_null", c) for c in self.required if c != self.text_field]
        rules += [Rule("date_parses", c, format=fmt) for c, fmt in self.dates.items()]
        rules += self.rules
        unique: dict[Rule, None] = dict.fromkeys(rules)
        return list(unique)


def curated_rows(df: pd.DataFrame, spec: GateSpec, at: datetime, coerce: bool = False) -> pa.Table:
    """Rows shaped as ``curated/<source>`` holds them: date fields parsed to dates and
    ``curated_at`` added. A date that does not parse is an error, or with ``coerce`` (rows
    released by hand) a null."""
    out = df.copy()
    for col, fmt in spec.dates.items():
        if col not in out.columns:
            continue
        parsed = pd.to_datetime(
            out[col].astype(object), format=fmt, errors="coerce" if coerce else "raise"
        )
        dates = pa.array(parsed.dt.date, from_pandas=True, type=pa.date32())
        out[col] = pd.array(dates, dtype=pd.ArrowDtype(pa.date32()))
    out["curated_at"] = pd.array(
        pa.array([at] * len(out), pa.timestamp("us", tz="UTC")),
        dtype=pd.ArrowDtype(pa.timestamp("us", tz="UTC")),
    )
    return pa.Table.from_pandas(out, preserve_index=False)


def rule_name(rule: Rule) -> str:
    bounds = ""
    if rule.min is not None or rule.max is not None:
        bounds = f"[{_num(rule.min)},{_num(rule.max)}]"
    return f"{rule.expect}({rule.column}){bounds}"


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)
