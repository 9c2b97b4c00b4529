"""Drift between two versions of a table: the field that moved is flagged, the others not."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from ingestion.lake import Lake
from tests.helpers import last_json, run_harvest

WORDS = ["market", "team", "election", "storm", "league", "vote", "price", "river", "city"]
SECTIONS = ["World", "Sports", "Business", "Sci/Tech"]


def rows(n: int, seed: int, body_words: tuple[int, int]) -> pa.Table:
    rng = random.Random(seed)
    day = date(2024, 1, 1)
    out = []
    for i in range(n):
        out.append(
            {
                "url": f"http://news/{seed}/{i}",
                "source": "news",
                "content_sha256": f"{seed}-{i}",
                "curated_at": datetime.now(UTC),
                "title": " ".join(rng.choices(WORDS, k=rng.randint(4, 8))),
                "body": " ".join(rng.choices(WORDS, k=rng.randint(*body_words))),
                "section": rng.choice(SECTIONS),
                "views": rng.gauss(1000, 100),
                "published": day + timedelta(days=rng.randint(0, 60)),
                "tags": rng.sample(WORDS, 2),
            }
        )
    return pa.Table.from_pylist(out)


@pytest.fixture
def news(lake_env: dict[str, str]) -> tuple[Lake, dict[str, str]]:
    lake = Lake(lake_env["HARVEST_LAKE"])
    lake.append("curated/news", rows(300, 1, (20, 40)))  # version 0
    lake.append("curated/news", rows(300, 2, (20, 40)))  # version 1: more of the same
    lake.append("curated/news", rows(300, 3, (120, 200)))  # version 2: bodies got longer
    return lake, lake_env


def test_shifted_lengths_are_flagged_and_unshifted_fields_not(
    news: tuple[Lake, dict[str, str]],
) -> None:
    _, env = news
    proc = run_harvest(["drift", "news", "--from", "1", "--to", "2"], env)
    summary = last_json(proc.stdout)
    fields = summary["fields"]
    assert isinstance(fields, dict)
    assert summary["drifted"] == ["body"]
    assert fields["body"]["drifted"] and fields["body"]["kind"] == "text"
    for name, kind in [
        ("title", "text"),
        ("section", "category"),
        ("views", "number"),
        ("published", "number"),
        ("tags", "category"),
    ]:
        assert fields[name]["kind"] == kind, name
        assert not fields[name]["drifted"], name
    assert "url" not in fields and "content_sha256" not in fields

    page = Path(str(summary["report"]))
    assert page.parent == Path(env["HARVEST_REPORTS"]) / "drift" / "news"
    html = page.read_text()
    assert html.count("data:image/png;base64,") == len(fields)
    assert "drifted" in html and "stable" in html
    detail = json.loads(page.with_suffix(".json").read_text())
    body = next(f for f in detail["fields"] if f["field"] == "body")
    assert body["details"]["length_drifted"]
    assert body["details"]["length_mean"][1] > 2 * body["details"]["length_mean"][0]
    assert "body: DRIFTED" in proc.stderr


def test_like_versions_show_no_drift_and_added_rows_can_be_compared(
    news: tuple[Lake, dict[str, str]],
) -> None:
    _, env = news
    same = last_json(run_harvest(["drift", "news", "--from", "0", "--to", "1"], env).stdout)
    assert same["drifted"] == []
    added = last_json(
        run_harvest(["drift", "news", "--from", "1", "--to", "2", "--added"], env).stdout
    )
    assert added["rows"] == [600, 300]
    assert added["drifted"] == ["body"]


def test_vocabulary_shift_is_flagged(lake_env: dict[str, str]) -> None:
    lake = Lake(lake_env["HARVEST_LAKE"])
    for words in ("the cat sat on the mat", "quarterly profit rose by"):
        lake.append("curated/talk", pa.table({"text": [f"{words} {i}" for i in range(99)]}))
    args = ["drift", "talk", "--from", "0", "--to", "1", "--added"]
    summary = last_json(run_harvest(args, lake_env).stdout)
    assert summary["drifted"] == ["text"]
    detail = json.loads(Path(str(summary["report"])).with_suffix(".json").read_text())
    text = detail["fields"][0]["details"]
    assert text["vocabulary_drifted"] and "profit" in text["new_tokens"]
    assert "cat" in text["lost_tokens"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch", "--from", "0", "--to", "1"], "no table 'curated/nosuch'"),
        (["news", "--from", "0", "--to", "9"], "curated/news has no version 9 (versions 0 to 2)"),
        (["news", "--from", "1", "--to", "1"], "nothing to compare"),
        (["news", "--from", "0", "--to", "1", "--table", "gold"], "--table 'gold'"),
    ],
)
def test_bad_inputs_are_named(
    news: tuple[Lake, dict[str, str]], args: list[str], message: str
) -> None:
    _, env = news
    proc = run_harvest(["drift", *args], env, check=False)
    assert proc.returncode == 2
    assert message in " ".join(proc.stderr.split())
