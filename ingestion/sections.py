"""What every section of a recipe shares: its pydantic config, the value types the
sections use, and problems in plain words under the key they are at.

A recipe is one YAML file of flat keys; each package reads the keys it owns as a pydantic
dataclass built on ``Section`` (the crawl in ``spiders.recipe``, the gate in
``validation.section``, the labels in ``labeling.section``) and ``harvest.recipe``
composes them. A section names every problem it finds, not the first: an unknown key
with the nearest known one, a missing key with what it holds, a value of the wrong type
with what it should be. The field descriptions, which ``harvest recipe schema`` gives
editors, are noun phrases saying what a value is, so that they read as the problem too:
``fields: required: a mapping of field name to selector``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, ClassVar, TypeVar, cast

from pydantic import (
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    TypeAdapter,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import ArgsKwargs, InitErrorDetails, PydanticCustomError, core_schema

# each section refuses keys it does not own: values are no longer mirrored between packages
SECTION = ConfigDict(extra="forbid")
# what a recipe problem is: (dotted key, problem), such as ("fields.title.css", "...")
Problem = tuple[str, str]
# the error type of a problem this module has put in words
RECIPE_ERROR = "recipe"
T = TypeVar("T")


def problem(message: str) -> PydanticCustomError:
    """A validation error saying ``message``, raised where the value is."""
    return PydanticCustomError(RECIPE_ERROR, "{problem}", {"problem": message})


def problems_error(
    title: str, found: Iterable[tuple[tuple[str | int, ...], str, Any]]
) -> PydanticValidationError:
    """One ValidationError for several problems, each at its location ``(loc, message, input)``
    relative to where it is raised: pydantic adds the location of the value being checked."""
    details = [
        InitErrorDetails(type=problem(message), loc=loc, input=value)
        for loc, message, value in found
    ]
    return PydanticValidationError.from_exception_data(title, details)


def unknown_key(key: Any, known: Iterable[str]) -> str:
    """The problem with an unknown key: the known key nearest to it, else all of them."""
    known = sorted(known)
    near = _nearest(key, known)
    if near is not None:
        return f"unknown key (did you mean {near}?)"
    return f"unknown key (expected one of {', '.join(known)})"


def _nearest(key: Any, known: Iterable[str]) -> str | None:
    near = difflib.get_close_matches(str(key), list(known), n=1)
    return near[0] if near else None


def yaml_keys(cls: type) -> tuple[str, ...]:
    """The keys a section reads from YAML, in the order it declares them: its fields but
    those kept out of the schema (a recipe's path, a field's name)."""
    return _yaml_keys(cls)


@cache
def _yaml_keys(cls: type) -> tuple[str, ...]:
    fields = getattr(cls, "__pydantic_fields__", {})
    return tuple(
        name
        for name, info in fields.items()
        if not any(isinstance(m, SkipJsonSchema) for m in info.metadata)  # type: ignore[misc]
    )


class Section:
    """Base of every recipe section and of each mapping within one.

    Read from YAML (a mapping), a section reports unknown keys with the nearest known one,
    missing keys with their description, and a value of the wrong type with what it
    should be; every problem it finds, then those of the sections within it. Built in
    Python (``Field("title", "str", css="h1")``) it is validated as any pydantic dataclass.
    """

    # what a value that is not a mapping should have been; None: its keys are listed
    shape: ClassVar[str | None] = None

    @model_validator(mode="wrap")
    @classmethod
    def _in_plain_words(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        if isinstance(value, (ArgsKwargs, cls)):
            return handler(value)
        known = yaml_keys(cls)
        if not isinstance(value, dict):
            raise problem(cls.shape or f"a mapping with keys from {', '.join(known)}")
        found: list[tuple[tuple[Any, ...], str, Any]] = [
            ((key,), unknown_key(key, known), v) for key, v in value.items() if key not in known
        ]
        # a misspelt key is named once, as unknown: not again as a missing one, nor by a
        # check of the whole mapping that the key meant would have met
        meant = {_nearest(key, known) for key in value if key not in known} - {None, *value}
        try:
            result = handler({k: v for k, v in value.items() if k in known})
        except PydanticValidationError as exc:
            found += [
                (e["loc"], _worded(cls, e), e.get("input"))
                for e in exc.errors()
                if not _said_already(e, meant)
            ]
        if found:
            raise problems_error(cls.__name__, found)
        return result


def _said_already(error: Any, meant: set[str | None]) -> bool:
    """Whether ``error`` only repeats that a key was misspelt: the key ``meant`` instead is
    missing, or the mapping as a whole fails a check that key would have met."""
    loc = error["loc"]
    if not meant:
        return False
    return not loc or (error["type"].startswith("missing") and loc[0] in meant)


def _worded(cls: type, error: Any) -> str:
    """An error of pydantic's in words; the section's own field descriptions where the error
    is about one of its fields as a whole."""
    kind, loc = error["type"], error["loc"]
    if kind == RECIPE_ERROR:
        return str(error["ctx"]["problem"])
    info = getattr(cls, "__pydantic_fields__", {}).get(loc[0]) if len(loc) == 1 else None
    said = info.description if info is not None else None
    if kind.startswith("missing"):
        return f"required: {said}" if said else "required"
    if said and kind != "value_error":
        return f"{said}, got {error.get('input')!r}"
    return worded(error)


# pydantic's error types in words, for values within a list or mapping of a section
WORDS = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "too_short": "must not be empty",
}


def worded(error: Any) -> str:
    kind = error["type"]
    if kind == RECIPE_ERROR:
        return str(error["ctx"]["problem"])
    if kind.startswith("missing"):
        return "required"
    if kind in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"])
    if kind in WORDS:
        return f"{WORDS[kind]}, got {error.get('input')!r}"
    return str(error["msg"])


def dotted(loc: Sequence[str | int]) -> str:
    """``("follow", 0, "allow")`` as ``follow[0].allow``."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def problems(exc: PydanticValidationError) -> list[Problem]:
    return [(dotted(e["loc"]), worded(e)) for e in exc.errors()]


@cache
def _adapter(cls: Any) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def validate(
    cls: type[T], raw: dict[str, Any], context: dict[str, Any] | None = None
) -> tuple[T | None, list[Problem]]:
    """``raw`` read as section ``cls``: the section, or None and every problem found."""
    try:
        section: T = _adapter(cast(Any, cls)).validate_python(raw, context=context)
        return section, []
    except PydanticValidationError as exc:
        return None, problems(exc)


def json_schema(cls: type) -> dict[str, Any]:
    return dict(_adapter(cls).json_schema())


# -- value types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OneOf:
    """A string from ``options`` (or what a callable gives, read only when needed: the
    labelling model's feature kinds come from a module that loads scikit-learn).

    ``Annotated[str, OneOf(("http", "browser"))]``; the problem names the options, as
    ``one of http, browser, got 'x'`` or, with ``what``, ``unknown type 'x' (known: ...)``.
    """

    options: Sequence[str] | Callable[[], Iterable[str]]
    what: str | None = None

    def values(self) -> list[str]:
        options = self.options() if callable(self.options) else self.options
        return list(options)

    def check(self, value: Any) -> str:
        options = self.values()
        if isinstance(value, str) and value in options:
            return value
        if self.what:
            raise problem(f"unknown {self.what} {value!r} (known: {', '.join(options)})")
        raise problem(f"one of {', '.join(options)}, got {value!r}")

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "enum": self.values()}


@dataclass(frozen=True)
class Bounded:
    """A number (``whole``: a whole number), in bounds; true and false are not numbers.

    Whole numbers stay ``int`` where a float is allowed: ``min: 30`` is kept as written.
    """

    whole: bool = False
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def said(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        low = self.gt if self.gt is not None else self.ge
        high = self.lt if self.lt is not None else self.le
        if low is not None and high is not None:
            opens = "(" if self.gt is not None else "["
            closes = ")" if self.lt is not None else "]"
            return f"{kind} in {opens}{low:g}, {high:g}{closes}"
        if low is not None:
            return f"{kind} {'>' if self.gt is not None else '>='} {low:g}"
        if high is not None:
            return f"{kind} {'<' if self.lt is not None else '<='} {high:g}"
        return kind

    def check(self, value: Any) -> Any:
        number = isinstance(value, int if self.whole else (int, float))
        if (
            not number
            or isinstance(value, bool)
            or (self.gt is not None and not value > self.gt)
            or (self.ge is not None and not value >= self.ge)
            or (self.lt is not None and not value < self.lt)
            or (self.le is not None and not value <= self.le)
        ):
            raise problem(f"{self.said()}, got {value!r}")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out: dict[str, Any] = {"type": "integer" if self.whole else "number"}
        bounds = {
            "exclusiveMinimum": self.gt,
            "minimum": self.ge,
            "exclusiveMaximum": self.lt,
            "maximum": self.le,
        }
        out.update({k: v for k, v in bounds.items() if v is not None})
        return out


@dataclass(frozen=True)
class Checked:
    """A string that ``check`` finds sound: it returns None, or the problem with it."""

    check: Callable[[str], str | None]
    said: str
    # not compared: a union's members are hashed, and a dict is not
    json: dict[str, Any] | None = field(default=None, compare=False)

    def validate(self, value: Any) -> str:
        if not isinstance(value, str):
            raise problem(f"{self.said}, got {value!r}")
        if (found := self.check(value)) is not None:
            raise problem(found)
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.validate)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", **(self.json or {})}


def null_is(default: Callable[[], Any], json_input: Any = None) -> BeforeValidator:
    """A YAML null read as ``default()``: ``browser:`` with nothing under it. ``json_input``:
    the type the schema says the value may be, null aside."""
    kwargs = {} if json_input is None else {"json_schema_input_type": json_input | None}
    return BeforeValidator(lambda value: default() if value is None else value, **kwargs)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise problem(f"true or false, got {value!r}")
    return value


def _regex_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"regular expression does not compile: {exc}"
    return None


def _date_format_problem(fmt: str) -> str | None:
    # a format with no directive matches no date: every row would go to quarantine
    if "%" not in fmt:
        return f"a strptime format such as '%Y-%m-%d', got {fmt!r}"
    return None


@dataclass(frozen=True)
class Plain:
    """A value ``fn`` checks (raising ``problem``) and returns, described by ``json``."""

    fn: Callable[[Any], Any]
    json: dict[str, Any] = field(compare=False)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.fn)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return dict(self.json)


# true or false, and nothing else YAML or Python would read as one
Flag = Annotated[bool, Plain(_flag, {"type": "boolean"})]
# any number, true and false excepted
Number = Annotated[float, Bounded()]
Regex = Annotated[str, Checked(_regex_problem, "a regular expression string", {"format": "regex"})]
DateFormat = Annotated[str, Checked(_date_format_problem, "a strptime format such as '%Y-%m-%d'")]
