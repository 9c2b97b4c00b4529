"""`harvest recipe`: a recipe's JSON Schema for editors, and a check of recipes."""

from __future__ import annotations

import json

import typer

from harvest.cli.common import config, emit, err
from harvest.cli.group import report

app = typer.Typer(
    help="Recipes: schema (their JSON Schema), check (every problem in them).",
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
