"""The rules a source's rows must meet: the recipe's own plus harvest's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MAX_TEXT = 100_000


@dataclass(frozen=True)
class Rule:
    """A column must meet: not_null, unique, length_between, date_parses or between."""

    expect: str
    column: str
    min: float | None = None
    max: float | None = None
    format: str | None = None


@dataclass(frozen=True)
class GateSpec:
    """What the gate needs to know about a source, independent of how it was crawled."""

    text_field: str
    required: list[str] = field(default_factory=list)
    dates: dict[str, str | None] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)

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


def rule_name(rule: Rule) -> str:
    bounds = ""
    if rule.min is not None or rule.max is not None:
        bounds = f"[{_num(rule.min)},{_num(rule.max)}]"
    return f"{rule.expect}({rule.column}){bounds}"


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)
