"""`harvest recipe schema`: one JSON Schema for a whole recipe file, composed from every
section's; and `harvest recipe check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from harvest.recipe import SECTIONS, Recipe, RecipeError, list_recipes, schema, yaml_keys
from ingestion.sections import Section
from tests.helpers import ROOT, last_json, run_harvest

GOOD = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    composed = schema()
    Draft202012Validator.check_schema(composed)
    return Draft202012Validator(composed)


def test_the_schema_is_draft_2020_12() -> None:
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", list_recipes(ROOT / "sources"), ids=lambda p: p.name)
def test_every_recipe_in_sources_meets_the_schema(
    validator: Draft202012Validator, path: Path
) -> None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(validator.iter_errors(raw)) == []


def test_the_schema_has_every_key_of_every_section_described() -> None:
    composed = schema()
    owned = [key for section in SECTIONS for key in yaml_keys(section)]
    assert len(owned) == len(set(owned))  # each key has one owner
    assert list(composed["properties"]) == owned == list(yaml_keys(Recipe))
    assert composed["additionalProperties"] is False
    assert composed["required"] == ["name", "start_urls", "fields"]
    for key, spec in composed["properties"].items():
        assert spec.get("description"), key


def _sections(cls: type, seen: dict[str, type]) -> dict[str, type]:
    """Every Section class within ``cls``, by name, as pydantic names their $defs."""
    for info in getattr(cls, "__pydantic_fields__", {}).values():
        for found in _classes(info.annotation):
            if found.__name__ not in seen:
                seen[found.__name__] = found
                _sections(found, seen)
    return seen


def _classes(annotation: Any) -> list[type]:
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, Section):
        return [annotation]
    return [c for arg in get_args(annotation) for c in _classes(arg)]


def test_each_mapping_within_a_recipe_has_its_keys_and_no_other() -> None:
    defs = schema()["$defs"]
    within = _sections(Recipe, {})
    assert {"Field", "Follow", "BrowserOptions", "Rule", "BatchSpec", "Schedule"} <= set(within)
    for name, cls in within.items():
        assert list(defs[name]["properties"]) == list(yaml_keys(cls)), name
        assert defs[name]["additionalProperties"] is False, name
        for key, spec in defs[name]["properties"].items():
            assert spec.get("description"), f"{name}.{key}"


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"colour": "blue"}, "colour"),
        ({"expectations": [{"expect": "between", "column": "body", "min": True}]}, "min"),
        ({"fields": {"title": {"css": "h1", "type": "datetime"}}}, "datetime"),
        ({"label_type": "tree"}, "tree"),
        ({"label_features": "bert"}, "bert"),
        ({"render": "telepathy"}, "telepathy"),
        ({"schedule": {"cron": "* * * * *", "label": {"push": 0}}}, "push"),
        ({"limits": {"pages": -1}}, "pages"),
    ],
)
def test_the_schema_refuses_what_a_recipe_may_not_say(
    validator: Draft202012Validator, changes: dict[str, Any], where: str
) -> None:
    errors = list(validator.iter_errors({**GOOD, **changes}))
    assert errors and any(where in f"{e.json_path} {e.message}" for e in errors)


def test_the_schema_takes_the_short_forms(validator: Draft202012Validator) -> None:
    raw = {
        **GOOD,
        "follow": ["/page/", {"allow": "/article/", "render": "browser"}],
        "proxies": ["http://127.0.0.2:8888"],
        "steps": ["normalize", {"language": {"min_chars": 5}}],
        "browser": None,
        "schedule": {"cron": "*/5 * * * *", "label": {"push": 5, "strategy": "entropy"}},
    }
    assert list(validator.iter_errors(raw)) == []


def test_recipe_schema_prints_it(lake_env: dict[str, str]) -> None:
    proc = run_harvest(["recipe", "schema"], lake_env)
    assert json.loads(proc.stdout) == schema()


def test_recipe_check_names_every_problem_of_every_recipe(
    tmp_path: Path, lake_env: dict[str, str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump({**GOOD, "lables": ["a"], "label_type": "tree", "render": "telepathy"})
    )
    good = ROOT / "sources" / "demo.yaml"
    proc = run_harvest(["recipe", "check", str(good), str(broken)], lake_env, check=False)
    assert proc.returncode == RecipeError.exit_code == 78
    report = last_json(proc.stdout)
    assert report["broken"] == 1
    ok, bad = report["recipes"]  # type: ignore[misc]
    assert (ok["recipe"], ok["ok"]) == (str(good), True)
    assert (bad["recipe"], bad["ok"]) == (str(broken), False)
    assert [p["key"] for p in bad["problems"]] == ["lables", "render", "label_type"]
    assert f"{broken}: lables: unknown key (did you mean labels?); render: " in proc.stderr
    assert f"{good}: ok" in proc.stderr


def test_recipe_check_takes_every_recipe_by_default(lake_env: dict[str, str]) -> None:
    proc = run_harvest(["recipe", "check"], {**lake_env, "HARVEST_SOURCES": str(ROOT / "sources")})
    report = last_json(proc.stdout)
    assert [Path(str(r["recipe"])).name for r in report["recipes"]] == [  # type: ignore[attr-defined]
        p.name for p in list_recipes(ROOT / "sources")
    ]
    assert report["broken"] == 0


def test_recipe_check_of_an_unknown_recipe_is_a_usage_error(lake_env: dict[str, str]) -> None:
    proc = run_harvest(["recipe", "check", "nosuch"], lake_env, check=False)
    assert proc.returncode == 2
    assert "no recipe for source 'nosuch'" in proc.stderr
