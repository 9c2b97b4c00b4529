"""Quarantine review on a real crawl of the demo site: list, show, recheck, release, drop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harvest.demosite import DemoSite, Site
from ingestion.lake import Lake
from tests.helpers import ROOT, last_json, run_harvest

pytestmark = pytest.mark.slow

TOO_STRICT = "{expect: length_between, column: title, min: 3, max: 40}"
FIXED = "{expect: length_between, column: title, min: 3, max: 300}"
STRICT_RULE = "length_between(title)[3,40]"


def write_recipe(path: Path, title_rule: str) -> None:
    demo = (ROOT / "sources" / "demo.yaml").read_text()
    recipe = demo.replace("name: demo\n", "name: review\n")
    old = "  - {expect: length_between, column: title, min: 3, max: 300}"
    assert old in recipe
    path.write_text(recipe.replace(old, f"  - {title_rule}"))


@pytest.fixture(scope="module")
def crawled(demo_site: DemoSite, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One crawl with a title rule too strict for the site, shared by the tests here."""
    base = tmp_path_factory.mktemp("review")
    write_recipe(base / "review.yaml", TOO_STRICT)
    env = {"HARVEST_LAKE": str(base / "lake"), "HARVEST_REPORTS": str(base / "reports")}
    run_harvest(["crawl", str(base / "review.yaml"), "--start-url", demo_site.url + "/"], env)
    return base


@pytest.fixture
def review(crawled: Path, tmp_path: Path) -> tuple[str, Lake, dict[str, str]]:
    """A copy of the crawled lake and the recipe, for one test to change."""
    shutil.copytree(crawled / "lake", tmp_path / "lake")
    shutil.copy(crawled / "review.yaml", tmp_path / "review.yaml")
    env = {"HARVEST_LAKE": str(tmp_path / "lake"), "HARVEST_REPORTS": str(tmp_path / "reports")}
    return str(tmp_path / "review.yaml"), Lake(env["HARVEST_LAKE"]), env


def held_urls(lake: Lake) -> set[str]:
    return set(lake.read("quarantine/review")["url"].to_pylist())


def test_rows_released_after_the_recipe_is_fixed(
    review: tuple[str, Lake, dict[str, str]], site: Site, demo_site: DemoSite
) -> None:
    recipe, lake, env = review
    counts = last_json(run_harvest(["quarantine", "list", recipe], env).stdout)
    by = counts["by_expectation"]
    assert isinstance(by, dict)
    too_long = by[STRICT_RULE]
    assert too_long > 10
    assert counts["rows"] == lake.read("quarantine/review").num_rows
    assert {demo_site.url + a.path for a in site.planted_invalid} <= held_urls(lake)

    shown = (
        run_harvest(
            ["quarantine", "show", recipe, "--expectation", STRICT_RULE, "--limit", "5"], env
        )
        .stdout.strip()
        .splitlines()
    )
    rows = [json.loads(line) for line in shown]
    assert len(rows) == 5
    assert all(STRICT_RULE in r["failed_expectations"] and r["url"] for r in rows)

    # still too strict: nothing moves
    same = last_json(run_harvest(["quarantine", "release", recipe, "--recheck"], env).stdout)
    assert same["curated"] == 0 and same["still_failing"] == counts["rows"]

    write_recipe(Path(recipe), FIXED)
    curated_before = lake.read("curated/review").num_rows
    done = last_json(run_harvest(["quarantine", "release", recipe, "--recheck"], env).stdout)
    invalid = {demo_site.url + a.path for a in site.planted_invalid}
    assert held_urls(lake) == invalid  # the rows still failing stay
    assert done["still_failing"] == len(invalid)
    assert done["curated"] + done["duplicates_dropped"] == counts["rows"] - len(invalid)
    curated = lake.read("curated/review")
    assert curated.num_rows == curated_before + done["curated"]
    expected = (
        len(site.articles)
        - len(site.planted_invalid)
        - len(site.planted_duplicates)
        - len(site.planted_near_duplicates)
    )
    assert curated.num_rows == expected  # as if the recipe had been right from the start
    assert len(set(curated["content_sha256"].to_pylist())) == curated.num_rows
    assert str(curated.schema.field("published").type) == "date32[day]"
    for r in lake.read("quarantine/review").to_pylist():
        assert STRICT_RULE not in r["failed_expectations"]  # what they fail now

    log = last_json(run_harvest(["status", "review"], env).stdout)["last_review"]
    assert log["action"] == "recheck" and log["curated"] == done["curated"]


def test_release_by_hand_records_who_and_why(
    review: tuple[str, Lake, dict[str, str]], site: Site, demo_site: DemoSite
) -> None:
    recipe, lake, env = review
    bad_date = next(a for a in site.planted_invalid if a.planted == "bad_date")
    url = demo_site.url + bad_date.path
    before = lake.read("quarantine/review").num_rows
    args = ["quarantine", "release", recipe, "--url", url, "--reason", "date fixed upstream"]
    done = last_json(run_harvest(args, env).stdout)
    assert done["curated"] == 1 and done["reason"] == "date fixed upstream" and done["by"]
    assert url not in held_urls(lake)
    assert lake.read("quarantine/review").num_rows == before - 1
    released = [r for r in lake.read("curated/review").to_pylist() if r["url"] == url]
    assert len(released) == 1 and released[0]["published"] is None  # unparseable: null

    # recorded in the lake: the commits' metadata and the runs table
    for table in ("curated/review", "quarantine/review"):
        meta = lake.metadata(table, lake.version(table) or 0)
        assert meta["reason"] == "date fixed upstream" and meta["review"] == "release"
    runs = lake.read("runs").to_pylist()
    record = json.loads([r for r in runs if r["stage"] == "quarantine"][-1]["details"])
    assert record["urls"] == [url] and record["reason"] == "date fixed upstream"


def test_drop_removes_rows_and_keeps_them_in_history(
    review: tuple[str, Lake, dict[str, str]], site: Site
) -> None:
    recipe, lake, env = review
    version = lake.version("quarantine/review")
    before = lake.read("quarantine/review").num_rows
    curated = lake.read("curated/review").num_rows
    args = [
        "quarantine",
        "drop",
        recipe,
        "--expectation",
        "not_null(body)",
        "--reason",
        "empty pages",
    ]
    done = last_json(run_harvest(args, env).stdout)
    empty = [a for a in site.planted_invalid if a.planted == "empty_body"]
    assert done["dropped"] == len(empty) > 0
    after = lake.read("quarantine/review")
    assert after.num_rows == before - len(empty)
    assert all("not_null(body)" not in r for r in after["failed_expectations"].to_pylist())
    assert lake.read("quarantine/review", version).num_rows == before  # nothing lost
    assert set(done["urls"]) <= set(lake.read("raw/review")["url"].to_pylist())
    assert lake.read("curated/review").num_rows == curated


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["release", "{r}", "--all"], "release by hand needs a --reason"),
        (["release", "{r}", "--reason", "x"], "say which rows"),
        (
            ["release", "{r}", "--reason", "x", "--url", "http://nope/"],
            "http://nope/ is not in quarantine/review",
        ),
        (
            ["drop", "{r}", "--reason", "x", "--expectation", "unique(title)"],
            "no row of quarantine/review failed 'unique(title)'",
        ),
        (["drop", "{r}", "--reason", " ", "--all"], "give a --reason"),
        (["list", "nosuch"], "no recipe for source 'nosuch'"),
    ],
)
def test_bad_reviews_are_refused_and_named(
    review: tuple[str, Lake, dict[str, str]], args: list[str], message: str
) -> None:
    recipe, lake, env = review
    version = lake.version("quarantine/review")
    argv = ["quarantine", *[recipe if a == "{r}" else a for a in args]]
    proc = run_harvest(argv, env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert lake.version("quarantine/review") == version


SPACED = """
name: spaced
start_urls: ["http://127.0.0.1:9/"]
allow_private: true
fields:
  title: {css: "h1::text", type: str}
  body: {css: "p::text", type: text}
text_field: body
expectations:
  - {expect: length_between, column: title, min: 1, max: 20}
"""


def test_recheck_runs_the_recipe_s_current_steps(tmp_path: Path) -> None:
    """Titles padded with white space fail until the recipe normalises them too."""
    from harvest.recipe import parse_recipe
    from harvest.stages import gate_spec
    from validation import quarantine

    lake, raw = spaced_lake(tmp_path)
    unchanged = quarantine.recheck(lake, "spaced", gate_spec(parse_recipe(raw, "spaced.yaml")))
    assert unchanged.curated == 0 and unchanged.still_failing == 3

    raw["steps"] = [{"normalize": {"columns": ["title", "body"]}}, "language"]
    done = quarantine.recheck(lake, "spaced", gate_spec(parse_recipe(raw, "spaced.yaml")))
    assert done.curated == 3 and done.still_failing == 0
    assert lake.read("quarantine/spaced").num_rows == 0
    curated = lake.read("curated/spaced").to_pylist()
    released = {r["url"]: r["title"] for r in curated if r["url"][-1] in "135"}
    assert released == {f"http://shop/{i}": f"item {i}" for i in (1, 3, 5)}  # as normalised


def spaced_lake(tmp_path: Path) -> tuple[Lake, dict[str, object]]:
    """quarantine/spaced holding three rows, from a real curate of six raw rows; and the
    recipe (whose titles, padded with white space, fail until it normalises them)."""
    import pyarrow as pa
    import yaml

    from harvest.recipe import parse_recipe
    from harvest.stages import gate_spec
    from ingestion.schema import content_sha256
    from validation.gate import curate

    lake = Lake(tmp_path / "lake")
    rows = []
    for i in range(6):
        fields = {"title": f"item\u00a0\u00a0 \t {i}" + " " * 30 * (i % 2), "body": f"text {i}"}
        rows.append(
            {
                **fields,
                "source": "spaced",
                "url": f"http://shop/{i}",
                "crawl_id": "c",
                "http_status": 200,
                "content_sha256": content_sha256(fields),
            }
        )
    lake.append("raw/spaced", pa.Table.from_pylist(rows))
    raw = yaml.safe_load(SPACED)
    first = curate(lake, "spaced", gate_spec(parse_recipe(raw, "spaced.yaml")), tmp_path / "r")
    assert first.curated == 3 and first.quarantined == 3
    return lake, raw


def quarantine_again(lake: Lake, later_by: int = 0) -> None:
    """What a raw table holding every row twice left behind: each quarantined row twice,
    the copy quarantined ``later_by`` seconds after the first."""
    from datetime import timedelta

    import pyarrow as pa

    held = lake.read("quarantine/spaced")
    at = held.schema.get_field_index("quarantined_at")
    shifted = [t + timedelta(seconds=later_by) for t in held["quarantined_at"].to_pylist()]
    lake.append("quarantine/spaced", held.set_column(at, held.field(at), pa.array(shifted)))


def test_recheck_of_rows_quarantined_twice_moves_each_once(tmp_path: Path) -> None:
    lake, raw = spaced_lake(tmp_path)
    quarantine_again(lake)
    assert lake.read("quarantine/spaced").num_rows == 6
    raw["steps"] = [{"normalize": {"columns": ["title", "body"]}}, "language"]
    (tmp_path / "spaced.yaml").write_text(yaml_text(raw))
    env = {"HARVEST_LAKE": str(tmp_path / "lake"), "HARVEST_REPORTS": str(tmp_path / "r")}

    argv = ["quarantine", "release", str(tmp_path / "spaced.yaml"), "--recheck"]
    done = last_json(run_harvest(argv, env).stdout)
    assert done["reviewed"] == done["curated"] == 3
    assert done["duplicates_dropped"] == 0  # one row per key moved, not two
    assert lake.read("quarantine/spaced").num_rows == 0
    urls = lake.read("curated/spaced")["url"].to_pylist()
    assert sorted(urls) == [f"http://shop/{i}" for i in range(6)]
    assert not lake.exists("duplicates/spaced")


def test_reviews_of_rows_quarantined_twice_keep_one_row_per_key(tmp_path: Path) -> None:
    from harvest.recipe import parse_recipe
    from harvest.stages import gate_spec
    from validation import quarantine

    lake, raw = spaced_lake(tmp_path)
    spec = gate_spec(parse_recipe(raw, "spaced.yaml"))
    first_at = set(lake.read("quarantine/spaced")["quarantined_at"].to_pylist())
    quarantine_again(lake, later_by=60)

    # still failing: the copies collapse into the latest quarantined, with its new failures
    still = quarantine.recheck(lake, "spaced", spec)
    assert still.reviewed == still.still_failing == 3 and still.curated == 0
    held = lake.read("quarantine/spaced").to_pylist()
    assert sorted(r["url"] for r in held) == ["http://shop/1", "http://shop/3", "http://shop/5"]
    assert not {r["quarantined_at"] for r in held} & first_at
    assert all(r["failed_expectations"] == ["length_between(title)[1,20]"] for r in held)

    quarantine_again(lake)
    dropped = quarantine.drop(lake, "spaced", "a bad page", urls=["http://shop/1"])
    assert dropped.dropped == 1 and dropped.urls == ["http://shop/1"]
    left = sorted(lake.read("quarantine/spaced")["url"].to_pylist())
    assert left == ["http://shop/3", "http://shop/3", "http://shop/5", "http://shop/5"]

    released = quarantine.release(lake, "spaced", spec, "long titles are fine", everything=True)
    assert released.reviewed == released.curated == 2 and released.duplicates_dropped == 0
    assert lake.read("quarantine/spaced").num_rows == 0
    curated = lake.read("curated/spaced")["url"].to_pylist()
    assert sorted(curated) == [f"http://shop/{i}" for i in (0, 2, 3, 4, 5)]


def yaml_text(raw: dict[str, object]) -> str:
    import yaml

    return str(yaml.safe_dump(raw))
