"""`harvest recipe`: a recipe's JSON Schema for editors, and a check of recipes."""

from __future__ import annotations

import json

import typer

from harvest.cli.choices import Render
from harvest.cli.common import config, emit, err
from harvest.cli.group import report

app = typer.Typer(
    help="Recipes: schema (their JSON Schema), check (every problem in them), try (one page).",
    no_args_is_help=True,
)


@app.command("schema")
def recipe_schema() -> None:
    """Print the JSON Schema (draft 2020-12) of a recipe file, every section's keys with
    their descriptions, for an editor to check and complete recipes as they are written:
    `harvest recipe schema > recipe.schema.json`, then a first line
    `# yaml-language-server: $schema=recipe.schema.json` in a recipe."""
    from harvest.recipe import schema

    print(json.dumps(schema(), indent=2))


@app.command("check")
def recipe_check(
    recipes: list[str] = typer.Argument(
        None, help="recipe names in sources/, or YAML paths (default: every recipe)"
    ),
) -> None:
    """Check recipes whole, as a crawl does before any request: every problem of each on
    one line on stderr (`FILE: KEY: problem; KEY: problem`), a JSON report on stdout.
    Exit 78 when a recipe is broken, 2 when one is not found."""
    from harvest.recipe import RecipeError, find_recipe, list_recipes, load_recipe

    cfg = config()
    paths = [find_recipe(r, cfg.sources) for r in recipes] if recipes else list_recipes(cfg.sources)
    checked = []
    for path in paths:
        try:
            load_recipe(path)
        except RecipeError as exc:
            report(exc)
            problems = [{"key": k, "problem": p} for k, p in exc.problems]
            checked.append({"recipe": str(path), "ok": False, "problems": problems})
            continue
        err.print(f"{path}: ok", highlight=False)
        checked.append({"recipe": str(path), "ok": True, "problems": []})
    broken = sum(not r["ok"] for r in checked)
    emit({"recipes": checked, "broken": broken})
    if broken:
        raise typer.Exit(RecipeError.exit_code)


@app.command("try")
def recipe_try(
    source: str = typer.Argument(..., help="recipe name in sources/, or a YAML path"),
    url: str = typer.Argument(..., help="the page to try the recipe on"),
    render: Render | None = typer.Option(
        None, help="fetch it so (default: as a crawl would, by the recipe and its follow rules)"
    ),
) -> None:
    """Fetch one page as a crawl would (rendered if the recipe says so, through its proxies)
    and show what the recipe makes of it: each field's value or why it is empty, the links
    each follow rule takes, and whether the page is an item. Writes nothing."""
    from harvest import stages
    from harvest.trypage import try_page
    from ingestion.errors import UnavailableError

    cfg = config()
    found = try_page(cfg, stages.recipe(cfg, source), url, render)
    if "error" in found:
        emit(found)
        raise UnavailableError(f"recipe try of {url}: {found['error']}")
    how = "rendered" if found["rendered"] else "fetched"
    err.print(f"{found['url']}: {how}, status {found['status']}", highlight=False)
    item = "yes" if found["item"] else f"no, {found['item_why_not']}"
    err.print(f"item: {item}", highlight=False)
    for name, entry in found["fields"].items():
        shown = f"empty ({entry['why']})" if "why" in entry else repr(entry["value"])[:200]
        err.print(f"  {name}: {shown}", highlight=False)
    if "hook_error" in found:
        err.print(f"parse hook failed: {found['hook_error']}", highlight=False)
    for rule in found["follow"]:
        within = f" within {rule['restrict_css']}" if rule["restrict_css"] else ""
        err.print(f"follow {rule['allow']}{within}: {len(rule['links'])} links", highlight=False)
    emit(found)
