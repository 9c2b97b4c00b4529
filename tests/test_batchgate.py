"""Batch-level gates: a batch unlike the source's last good one is held back whole."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest

from harvest.recipe import RecipeError, parse_recipe
from ingestion.lake import Lake
from ingestion.schema import content_sha256
from ingestion.writer import BatchWriter
from tests.helpers import last_json, run_harvest

RECIPE = """
name: shop
start_urls: ["http://127.0.0.1:9/"]
allow_private: true
fields:
  title: {css: "h1::text", type: str}
  body: {css: "p::text", type: text}
  price: {css: ".price::text", type: float}
text_field: body
batch:
  min_rows_ratio: 0.5
  max_null_rate_increase: 0.2
  numeric_drift: {fields: [price], max_mean_shift: 0.5, min_ks_pvalue: 0.001}
"""
TYPES = {"title": pa.string(), "body": pa.string(), "price": pa.float64()}


@pytest.fixture
def shop(tmp_path: Path, lake_env: dict[str, str]) -> tuple[str, Lake, dict[str, str]]:
    path = tmp_path / "shop.yaml"
    path.write_text(RECIPE)
    return str(path), Lake(lake_env["HARVEST_LAKE"]), lake_env


def land(lake: Lake, n: int, start: int, price: float = 1.0, null_titles: float = 0.0) -> None:
    """One crawl's batch into raw/shop through the crawler's own batch writer."""
    rng = random.Random(start)
    writer = BatchWriter(lake, "raw/shop", batch_size=10_000, field_types=TYPES)
    for i in range(start, start + n):
        title = None if rng.random() < null_titles else f"item {i}"
        body = " ".join(f"w{rng.randrange(10**6)}" for _ in range(rng.randint(10, 30)))
        fields = {"title": title, "body": body, "price": rng.uniform(10, 20) * price}
        writer.add(
            {
                **fields,
                "source": "shop",
                "url": f"http://shop/{i}",
                "crawl_id": "c",
                "http_status": 200,
                "content_sha256": content_sha256(fields),
            }
        )
    writer.flush()


def curate(recipe: str, env: dict[str, str], *extra: str) -> dict[str, object]:
    return last_json(run_harvest(["curate", recipe, *extra], env).stdout)


def test_collapsed_row_count_is_held_back_whole_and_status_says_why(
    shop: tuple[str, Lake, dict[str, str]],
) -> None:
    recipe, lake, env = shop
    land(lake, 100, 0)
    first = curate(recipe, env)
    assert first["batch_status"] == "published" and first["curated"] == 100
    curated_version = lake.version("curated/shop")

    land(lake, 8, 1000)  # the site changed its layout: a few pages still match
    held = curate(recipe, env)
    assert held["batch_status"] == "held"
    assert held["curated"] == held["quarantined"] == 0
    assert any("row_count is 8" in r and ">= 50" in r for r in held["held_reasons"])
    assert lake.version("curated/shop") == curated_version
    assert not lake.exists("quarantine/shop")
    assert lake.read("raw/shop").num_rows == 108  # raw keeps the held rows

    # the report shows the batch-level result
    page = Path(str(held["report"])).read_text()
    assert "Batch-level gates" in page and "row_count" in page and "held back whole" in page
    index = (Path(str(held["report"])).parent / "index.html").read_text()
    assert "raw-v1" in index and "held" in index

    # a later curate run tries the same rows again, and holds them again
    again = curate(recipe, env)
    assert again["batch_status"] == "held" and again["rows_in"] == 8

    proc = run_harvest(["status", "shop"], env)
    status = last_json(proc.stdout)
    assert status["held"]["tries"] == 2
    assert status["held"]["raw_from"] == 0 and status["held"]["raw_to"] == 1
    assert any("row_count is 8" in r for r in status["held"]["reasons"])
    assert status["last_curate"]["curated"] == 100
    assert "HELD" in proc.stderr and "row_count is 8" in proc.stderr

    # a person accepts it: published, recorded with who and why, no longer held
    accepted = curate(recipe, env, "--accept-batch", "--reason", "the shop closed a category")
    assert accepted["batch_status"] == "accepted" and accepted["curated"] == 8
    assert lake.read("curated/shop").num_rows == 108
    status = last_json(run_harvest(["status", "shop"], env).stdout)
    assert status["held"] is None
    assert status["last_good_batch"]["status"] == "accepted"
    assert status["last_good_batch"]["note"] == "the shop closed a category"
    assert status["last_good_batch"]["by"]


def test_null_rate_jump_and_moved_numbers_are_held_a_like_batch_is_not(
    shop: tuple[str, Lake, dict[str, str]],
) -> None:
    recipe, lake, env = shop
    land(lake, 120, 0)
    assert curate(recipe, env)["batch_status"] == "published"

    land(lake, 120, 1000, null_titles=0.5)
    held = curate(recipe, env)
    assert held["batch_status"] == "held"
    assert [r.split(" ")[0] for r in held["held_reasons"]] == ["null_rate(title)"]
    # the held batch is retried together with the next crawl's rows; accept it to move on
    curate(recipe, env, "--accept-batch", "--reason", "titles moved")

    land(lake, 120, 2000, price=3.0)
    moved = curate(recipe, env)
    assert moved["batch_status"] == "held"
    checks = {r.split(" ")[0] for r in moved["held_reasons"]}
    assert checks == {"mean(price)", "ks_pvalue(price)"}
    accepted = curate(recipe, env, "--accept-batch")

    land(lake, 110, 3000, price=3.0)  # like the batch accepted last
    like = curate(recipe, env)
    assert like["batch_status"] == "published" and like["held_reasons"] == []
    assert like["curated"] == 110
    assert accepted["curated"] == 120

    report = json.loads(Path(str(like["report"])).with_suffix(".json").read_text())
    engines = {c["engine"] for c in report["batch_expectations"]}
    assert engines == {"great_expectations", "scipy"}
    assert all(c["success"] for c in report["batch_expectations"])


def test_without_a_batch_key_nothing_is_held(tmp_path: Path, lake_env: dict[str, str]) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(RECIPE.split("batch:")[0])
    lake = Lake(lake_env["HARVEST_LAKE"])
    land(lake, 100, 0)
    curate(str(path), lake_env)
    land(lake, 3, 1000)
    assert curate(str(path), lake_env)["batch_status"] == "published"


@pytest.mark.parametrize(
    ("batch", "key"),
    [
        ({"min_rows_ratio": 0}, "batch.min_rows_ratio"),
        ({"min_rows_ratio": "half"}, "batch.min_rows_ratio"),
        ({"max_null_rate_increase": 2}, "batch.max_null_rate_increase"),
        ({"rows": 3}, "batch.rows"),
        ({}, "batch"),
        ({"numeric_drift": {"fields": ["price"]}}, "batch.numeric_drift"),
        (
            {"numeric_drift": {"fields": ["nope"], "max_mean_shift": 1}},
            "batch.numeric_drift.fields[0]",
        ),
        ({"numeric_drift": {"min_ks_pvalue": 1.5}}, "batch.numeric_drift.min_ks_pvalue"),
        ({"numeric_drift": {"max_mean_shift": -1}}, "batch.numeric_drift.max_mean_shift"),
    ],
)
def test_bad_batch_keys_are_named(batch: dict[str, object], key: str) -> None:
    import yaml

    raw = yaml.safe_load(RECIPE)
    raw["batch"] = batch
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw, "shop.yaml")
    assert info.value.key == key


def test_text_fields_drift_by_length() -> None:
    import yaml

    raw = yaml.safe_load(RECIPE)
    raw["batch"] = {"numeric_drift": {"fields": ["body", "price"], "max_mean_shift": 0.5}}
    gates = parse_recipe(raw, "shop.yaml").batch
    assert gates is not None and gates.drift_fields == ("body", "price")
    assert gates.min_rows_ratio is None
