"""``parse:`` hooks: a recipe's own Python over a BeautifulSoup tree of each item page."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harvest.demosite import DemoSite, generate
from harvest.recipe import RecipeError, load_recipe
from ingestion.lake import Lake
from tests.helpers import ROOT, last_json, run_harvest

DEMO = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSite]:
    with DemoSite(generate(16, seed=21)) as server:
        yield server


def recipe_in(folder: Path, name: str, **changes: Any) -> Path:
    raw = {**yaml.safe_load(yaml.safe_dump(DEMO)), "name": name, **changes}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def crawl(
    path: Path, site: DemoSite, tmp_path: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    env = {"HARVEST_LAKE": str(tmp_path / "lake"), "HARVEST_REPORTS": str(tmp_path / "reports")}
    proc = run_harvest(["crawl", str(path), "--no-curate", "--start-url", site.url + "/"], env)
    table = Lake(env["HARVEST_LAKE"]).read(f"raw/{path.stem}", columns=["url", "author"])
    return last_json(proc.stdout), table.to_pylist()


@pytest.mark.slow
def test_the_example_hook_fills_fields_selectors_leave_out(site: DemoSite, tmp_path: Path) -> None:
    fields = dict(DEMO["fields"])
    for name in ("author", "published"):
        fields[name] = {k: v for k, v in fields[name].items() if k != "css"}
    path = recipe_in(tmp_path / "sources", "hooked", fields=fields, parse="hooks.news:byline")
    (tmp_path / "sources" / "hooks").mkdir()
    example = ROOT / "sources" / "hooks" / "news.py"
    (tmp_path / "sources" / "hooks" / "news.py").write_text(example.read_text())
    summary, rows = crawl(path, site, tmp_path)
    authors = {site.url + a.path: a.author for a in site.site.articles}
    assert summary["items"] == len(site.site.articles)
    assert {r["url"]: r["author"] for r in rows} == authors
    assert summary["account"]["hook_errors"] == {}


@pytest.mark.slow
def test_a_hook_that_raises_costs_its_pages_not_the_crawl(site: DemoSite, tmp_path: Path) -> None:
    slugs = [a.slug for a in site.site.articles]
    failing = set(random.sample(slugs, random.randint(1, len(slugs) - 1)))
    folder = tmp_path / "sources"
    path = recipe_in(folder, "flaky", parse="flakyhook:fields")
    (folder / "flakyhook.py").write_text(
        f"FAILING = {sorted(failing)!r}\n"
        "def fields(response, soup):\n"
        "    if response.url.rsplit('/', 1)[1] in FAILING:\n"
        "        raise KeyError('no byline')\n"
        "    return {'author': soup.select_one('span.author').get_text().upper()}\n"
    )
    summary, rows = crawl(path, site, tmp_path)
    assert summary["items"] == len(slugs)  # every page, the failing ones with their selectors
    assert summary["account"]["hook_errors"] == {"KeyError": len(failing)}
    by_slug = {a.slug: a.author for a in site.site.articles}
    for row in rows:
        slug = row["url"].rsplit("/", 1)[1]
        expected = by_slug[slug] if slug in failing else by_slug[slug].upper()
        assert row["author"] == expected, row["url"]


def test_a_hook_that_cannot_be_imported_is_a_recipe_problem(tmp_path: Path) -> None:
    path = recipe_in(tmp_path, "nohook", parse="hooks.missing:fields")
    with pytest.raises(RecipeError, match=r"nohook.yaml: parse: cannot import hooks.missing"):
        load_recipe(path)
    (tmp_path / "badhook.py").write_text("def fields(:\n")
    path = recipe_in(tmp_path, "badhook", parse="badhook:fields")
    with pytest.raises(RecipeError, match=r"parse: cannot import badhook: SyntaxError"):
        load_recipe(path)
    path = recipe_in(tmp_path, "badspec", parse="no function")
    with pytest.raises(RecipeError, match=r"parse: .*MODULE:FUNCTION"):
        load_recipe(path)


def test_a_field_without_a_selector_needs_a_hook(tmp_path: Path) -> None:
    fields = {**DEMO["fields"], "author": {"type": "str"}}
    path = recipe_in(tmp_path, "noselector", fields=fields)
    with pytest.raises(RecipeError, match=r"fields.author: css or xpath is required"):
        load_recipe(path)
