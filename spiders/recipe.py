"""Recipes: one YAML file per source, checked in full before any request is made."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from parsel import Selector
from parsel.csstranslator import HTMLTranslator

TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "text": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    # dates stay as published in raw; the gate checks and parses them
    "date": pa.string(),
    "list": pa.list_(pa.string()),
}
TOP_KEYS = {
    "name",
    "start_urls",
    "allowed_domains",
    "follow",
    "item_urls",
    "fields",
    "text_field",
    "labels",
    "expectations",
    "settings",
}
FIELD_KEYS = {"css", "xpath", "type", "format", "required"}
FOLLOW_KEYS = {"allow", "restrict_css"}
EXPECTATION_KINDS = {"not_null", "unique", "length_between", "date_parses", "between"}
EXPECTATION_KEYS = {"expect", "column", "min", "max", "format"}


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file and the key."""

    def __init__(self, path: str | Path, key: str, problem: str):
        self.path, self.key = str(path), key
        super().__init__(f"{path}: {key}: {problem}")


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    css: str | None = None
    xpath: str | None = None
    format: str | None = None
    required: bool = True

    @property
    def arrow_type(self) -> pa.DataType:
        return TYPES[self.type]


@dataclass(frozen=True)
class Follow:
    allow: str
    restrict_css: str | None = None


@dataclass(frozen=True)
class Expectation:
    expect: str
    column: str
    min: float | None = None
    max: float | None = None
    format: str | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    path: str
    start_urls: list[str]
    allowed_domains: list[str]
    follow: list[Follow]
    item_urls: str
    fields: dict[str, Field]
    text_field: str
    labels: list[str] = field(default_factory=list)
    expectations: list[Expectation] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def field_types(self) -> dict[str, pa.DataType]:
        return {name: f.arrow_type for name, f in self.fields.items()}


def find_recipe(name_or_path: str, sources_dir: str | Path = "sources") -> Path:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise RecipeError(path, "path", "no such recipe file")
        return path
    for suffix in (".yaml", ".yml"):
        candidate = Path(sources_dir) / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in Path(sources_dir).glob("*.y*ml"))
    raise RecipeError(
        Path(sources_dir) / f"{name_or_path}.yaml",
        "name",
        f"no recipe for source {name_or_path!r} (known: {', '.join(known) or 'none'})",
    )


def load_recipe(name_or_path: str | Path, sources_dir: str | Path = "sources") -> Recipe:
    path = find_recipe(str(name_or_path), sources_dir)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(path, "yaml", f"not valid YAML: {exc}") from exc
    return parse_recipe(raw, path)


def parse_recipe(raw: Any, path: str | Path) -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(path, "(top)", "a recipe is a mapping of keys")
    _no_unknown(path, "", raw, TOP_KEYS)

    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_\-]+", name):
        raise RecipeError(path, "name", "required, lower-case letters, digits, - and _")

    start_urls = raw.get("start_urls")
    if not start_urls or not isinstance(start_urls, list):
        raise RecipeError(path, "start_urls", "required: a non-empty list of URLs")
    for i, url in enumerate(start_urls):
        if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
            raise RecipeError(path, f"start_urls[{i}]", f"not an http(s) URL: {url!r}")

    allowed = raw.get("allowed_domains", [])
    if not isinstance(allowed, list) or not all(isinstance(d, str) for d in allowed):
        raise RecipeError(path, "allowed_domains", "a list of host names")

    follow = [_follow(path, i, f) for i, f in enumerate(raw.get("follow") or [])]
    item_urls = raw.get("item_urls", ".*")
    _regex(path, "item_urls", item_urls)

    raw_fields = raw.get("fields")
    if not raw_fields or not isinstance(raw_fields, dict):
        raise RecipeError(path, "fields", "required: a mapping of field name to selector")
    fields = {n: _field(path, n, spec) for n, spec in raw_fields.items()}

    text_field = raw.get("text_field", next(iter(fields)))
    if text_field not in fields:
        raise RecipeError(path, "text_field", f"{text_field!r} is not one of the fields")

    labels = raw.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise RecipeError(path, "labels", "a list of class names")

    columns = set(fields) | {"url"}
    expectations = [
        _expectation(path, i, e, columns) for i, e in enumerate(raw.get("expectations") or [])
    ]
    settings = raw.get("settings", {})
    if not isinstance(settings, dict):
        raise RecipeError(path, "settings", "a mapping of Scrapy setting to value")

    return Recipe(
        name=name,
        path=str(path),
        start_urls=list(start_urls),
        allowed_domains=list(allowed),
        follow=follow,
        item_urls=item_urls,
        fields=fields,
        text_field=text_field,
        labels=list(labels),
        expectations=expectations,
        settings=dict(settings),
    )


def _no_unknown(path: str | Path, prefix: str, raw: dict[str, Any], known: set[str]) -> None:
    for key in raw:
        if key not in known:
            raise RecipeError(
                path, f"{prefix}{key}", f"unknown key (expected one of {', '.join(sorted(known))})"
            )


def _regex(path: str | Path, key: str, pattern: Any) -> None:
    if not isinstance(pattern, str):
        raise RecipeError(path, key, "a regular expression string")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise RecipeError(path, key, f"regular expression does not compile: {exc}") from exc


def _css(path: str | Path, key: str, query: Any) -> None:
    if not isinstance(query, str):
        raise RecipeError(path, key, "a CSS selector string")
    try:
        HTMLTranslator().css_to_xpath(query)
    except Exception as exc:  # cssselect raises several unrelated types
        raise RecipeError(path, key, f"CSS selector does not parse: {exc}") from exc


def _xpath(path: str | Path, key: str, query: Any) -> None:
    if not isinstance(query, str):
        raise RecipeError(path, key, "an XPath string")
    try:
        Selector(text="<html/>").xpath(query)
    except ValueError as exc:
        raise RecipeError(path, key, f"XPath does not parse: {exc}") from exc


def _follow(path: str | Path, i: int, raw: Any) -> Follow:
    key = f"follow[{i}]"
    if isinstance(raw, str):
        raw = {"allow": raw}
    if not isinstance(raw, dict):
        raise RecipeError(path, key, "a URL regex or a mapping with allow and restrict_css")
    _no_unknown(path, f"{key}.", raw, FOLLOW_KEYS)
    _regex(path, f"{key}.allow", raw.get("allow"))
    if "restrict_css" in raw:
        _css(path, f"{key}.restrict_css", raw["restrict_css"])
    return Follow(allow=raw["allow"], restrict_css=raw.get("restrict_css"))


def _field(path: str | Path, name: str, raw: Any) -> Field:
    key = f"fields.{name}"
    if not isinstance(raw, dict):
        raise RecipeError(path, key, "a mapping with css or xpath, and type")
    _no_unknown(path, f"{key}.", raw, FIELD_KEYS)
    if ("css" in raw) == ("xpath" in raw):
        raise RecipeError(path, key, "exactly one of css or xpath is required")
    if "css" in raw:
        _css(path, f"{key}.css", raw["css"])
    else:
        _xpath(path, f"{key}.xpath", raw["xpath"])
    ftype = raw.get("type", "str")
    if ftype not in TYPES:
        raise RecipeError(
            path, f"{key}.type", f"unknown type {ftype!r} (known: {', '.join(TYPES)})"
        )
    return Field(
        name=name,
        type=ftype,
        css=raw.get("css"),
        xpath=raw.get("xpath"),
        format=raw.get("format"),
        required=bool(raw.get("required", True)),
    )


def _expectation(path: str | Path, i: int, raw: Any, columns: set[str]) -> Expectation:
    key = f"expectations[{i}]"
    if not isinstance(raw, dict):
        raise RecipeError(path, key, "a mapping with expect and column")
    _no_unknown(path, f"{key}.", raw, EXPECTATION_KEYS)
    kind = raw.get("expect")
    if kind not in EXPECTATION_KINDS:
        raise RecipeError(
            path,
            f"{key}.expect",
            f"unknown expectation {kind!r} (known: {', '.join(sorted(EXPECTATION_KINDS))})",
        )
    column = raw.get("column")
    if column not in columns:
        raise RecipeError(path, f"{key}.column", f"{column!r} is not a field of this recipe")
    for bound in ("min", "max"):
        if bound in raw and not isinstance(raw[bound], (int, float)):
            raise RecipeError(path, f"{key}.{bound}", "a number")
    return Expectation(
        expect=kind, column=column, min=raw.get("min"), max=raw.get("max"), format=raw.get("format")
    )
