"""A recipe whole: the sections each package owns, composed.

A recipe is one YAML file per source in flat top-level keys. Each package reads the keys
it owns as its own section: the crawl in ``spiders.recipe``, the gate (expectations,
batch gates, steps) in ``validation.section``, the labels in ``labeling.section``; the
schedule joins the crawl's part (``spiders.schedule``) and labeling's (``labeling.section``).
Here each key goes to the section that owns it, every section is read, and every problem
of every section is reported at once, with a "did you mean" for a key no section owns.
What no section can check alone, because it ties two together (the text field and the
expectations' columns name fields or the steps' outputs, the steps read fields, a batch's
drift compares fields), is checked once both are sound, so that one mistake is not named
again as several.

``Recipe`` is a crawl recipe (``spiders.recipe.Recipe``, what the spider takes) with the
other sections' keys besides, under the same names as in the file.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from pydantic import ConfigDict
from pydantic import Field as Described
from pydantic.dataclasses import dataclass

from ingestion.schema import PROVENANCE_COLUMNS
from ingestion.sections import SECTION, Problem, Section, json_schema, unknown_key, validate
from ingestion.sections import yaml_keys as yaml_keys
from ingestion.transforms import StepError, check_columns, outputs
from labeling.section import LabelSchedule, LabelSection
from spiders import hooks
from spiders.recipe import PATH, read_recipe, recipe_mapping
from spiders.recipe import RECIPE_SUFFIXES as RECIPE_SUFFIXES
from spiders.recipe import Recipe as CrawlRecipe
from spiders.recipe import RecipeError as RecipeError
from spiders.recipe import UnknownRecipeError as UnknownRecipeError
from spiders.recipe import find_recipe as find_recipe
from spiders.recipe import list_recipes as list_recipes
from spiders.schedule import Schedule as CrawlSchedule
from validation.section import TEXT_FIELD, BatchSpec, GateSection, MonitorSection

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# the field types a batch's drift compares by value; text and list ones by length
NUMERIC = ("int", "float")


@dataclass(frozen=True, kw_only=True, config=SECTION)
class Schedule(LabelSchedule, CrawlSchedule):
    """When ``harvest serve`` crawls the source (``cron``, ``timezone``, ``time_limit``),
    how often a failed run is tried again (``retries``, ``retry_delay``) and what follows
    each run: a label push, a retrain."""

    def as_json(self) -> dict[str, Any]:
        return {
            "cron": self.cron,
            "timezone": self.timezone,
            "label": {"push": self.push, "strategy": self.strategy} if self.push else None,
            "retrain": self.retrain,
            "time_limit": self.time_limit,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
        }


@dataclass(frozen=True, kw_only=True, config=SECTION)
class ScheduleSection(Section):
    """The section harvest owns itself: when ``harvest serve`` runs the source."""

    schedule: Schedule | None = Described(
        default=None,
        description="when harvest serve crawls the source and what follows each run "
        "(none: on demand only)",
    )


# every section of a recipe, in the order their keys are listed and their problems named
SECTIONS: tuple[type[Section], ...] = (
    CrawlRecipe,
    GateSection,
    MonitorSection,
    LabelSection,
    ScheduleSection,
)


@dataclass(
    frozen=True, kw_only=True, config=ConfigDict(extra="forbid", arbitrary_types_allowed=True)
)
class Recipe(ScheduleSection, LabelSection, MonitorSection, GateSection, CrawlRecipe):
    """A harvest recipe: one YAML file per source, checked whole before any request. Its
    sections: the crawl (spiders), the gate and the model's monitoring (validation), the
    labels (labeling) and the schedule."""


def load_recipe(name_or_path: str | Path, sources_dir: str | Path = "sources") -> Recipe:
    path, raw = read_recipe(name_or_path, sources_dir)
    return parse_recipe(raw, path)


def parse_recipe(raw: Any, path: str | Path) -> Recipe:
    """The recipe in ``raw``, or a RecipeError naming every problem found in it."""
    mapping = recipe_mapping(raw, path)
    owners = {key: section for section in SECTIONS for key in yaml_keys(section)}
    found: list[Problem] = [
        (str(key), unknown_key(key, owners)) for key in mapping if key not in owners
    ]
    context = {PATH: str(path), TEXT_FIELD: _text_field(mapping)}
    parts: dict[type[Section], Any] = {}
    for section in SECTIONS:
        own = {k: v for k, v in mapping.items() if owners.get(k) is section}
        parts[section], problems = validate(section, own, context)
        found += problems
    crawl, gate = parts[CrawlRecipe], parts[GateSection]
    if crawl is not None and gate is not None:
        parts[GateSection], problems = _across(crawl, gate)
        found += problems
    if crawl and crawl.parse and (why := hooks.import_problem(crawl.parse, Path(path).parent)):
        found.append(("parse", why))
    if found:
        raise RecipeError.of(path, sorted(found, key=_position))
    values = {f.name: getattr(part, f.name) for part in parts.values() for f in _fields(part)}
    return Recipe(**values)


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a recipe file: every section's keys, described."""
    composed = json_schema(Recipe)
    composed.pop("title", None)
    return {"$schema": SCHEMA_DIALECT, "title": "harvest recipe", **composed}


def _fields(part: Any) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(part)


def _text_field(mapping: dict[str, Any]) -> str:
    """The text field as the recipe gives it, for the steps to work on: its ``text_field``,
    else its first field. A guess only while the crawl section is unsound, when the steps'
    columns are not checked."""
    named = mapping.get("text_field")
    if isinstance(named, str) and named:
        return named
    fields = mapping.get("fields")
    first = next(iter(fields), None) if isinstance(fields, dict) else None
    return first if isinstance(first, str) else "text"


def _across(crawl: CrawlRecipe, gate: GateSection) -> tuple[GateSection | None, list[Problem]]:
    """What ties the gate to the crawl: the text field and the columns the steps read and
    the expectations check. The gate, the fields a batch's drift compares filled in."""
    fields, steps = crawl.fields, gate.steps
    if crawl.text_field not in fields and crawl.text_field not in outputs(steps):
        problem = f"{crawl.text_field!r} is not one of the fields (or a step's output)"
        return None, [("text_field", problem)]
    try:
        check_columns(steps, [*fields, *PROVENANCE_COLUMNS])
    except StepError as exc:
        return None, [(f"steps{exc.key}", exc.problem)]
    columns = set(fields) | {"url"} | outputs(steps)
    found = [
        (f"expectations[{i}].column", f"{rule.column!r} is not a field of this recipe")
        for i, rule in enumerate(gate.expectations)
        if rule.column not in columns
    ]
    batch, problems = _drift(gate.batch, crawl)
    found += problems
    if found:
        return None, found
    return dataclasses.replace(gate, batch=batch), []


def _drift(batch: BatchSpec | None, crawl: CrawlRecipe) -> tuple[BatchSpec | None, list[Problem]]:
    """The batch gates, the fields their drift compares checked against the crawl's: by
    default its int and float fields; text and list ones by length; dates not at all."""
    drift = batch.numeric_drift if batch is not None else None
    if batch is None or drift is None:
        return batch, []
    fields = crawl.fields
    key = "batch.numeric_drift.fields"
    if drift.fields is None:
        numeric = tuple(n for n, f in fields.items() if f.type in NUMERIC)
        if not numeric:
            return None, [(key, "required: this recipe has no int or float fields")]
        return dataclasses.replace(
            batch, numeric_drift=dataclasses.replace(drift, fields=numeric)
        ), []
    problems = [
        (f"{key}[{i}]", f"{name!r} is not a number, text or list field of this recipe")
        for i, name in enumerate(drift.fields)
        if name not in fields or fields[name].type == "date"
    ]
    return batch, problems


def _position(found: Problem) -> int:
    """Where a problem's top-level key comes in a recipe: keys no section owns first, then
    each section's in turn, in the order it declares them."""
    top = re.match(r"[^.\[]*", found[0])
    keys = yaml_keys(Recipe)
    return keys.index(top.group()) if top and top.group() in keys else -1
