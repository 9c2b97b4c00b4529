"""Transform steps one by one, the steps a recipe lists, and the gate running them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import yaml

from harvest.recipe import RecipeError, load_recipe, parse_recipe
from harvest.stages import gate_spec
from ingestion.lake import Lake
from ingestion.schema import content_sha256
from ingestion.transforms import (
    DEFAULT_STEPS,
    Extract,
    Language,
    Normalize,
    StepError,
    apply_steps,
    parse_steps,
)
from ingestion.transforms.normalize import normalize_text
from tests.helpers import ROOT

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Rivers rise as storms sweep the north | The Valley Courier</title>
<meta name="author" content="Hana Okafor">
<meta property="article:published_time" content="2024-03-14T08:00:00Z">
<script>var ads = [];</script></head>
<body>
<div class="cookie">We use cookies to personalise content and ads. Accept all cookies?</div>
<header><a href="/">The Valley Courier</a><nav><a href="/news">News</a>
<a href="/sport">Sport</a><a href="/weather">Weather</a><a href="/subscribe">Subscribe</a></nav>
</header>
<main><article>
<h1>Rivers rise as storms sweep the north</h1>
<p class="byline">By Hana Okafor</p>
<p>Three rivers burst their banks on Wednesday night after two days of heavy rain, and
emergency crews moved more than four hundred people from homes along the water.</p>
<p>The regional council said the worst of the flooding had passed by the morning, but
warned that roads in the lower valley would stay closed until the weekend.</p>
<p>Farmers in the area said the timing could hardly have been worse, with the spring
planting only a week away and many fields still under water.</p>
</article>
<aside><h2>Most read</h2><ul><li><a href="/a">Council approves new bridge budget</a></li>
<li><a href="/b">Local team wins the cup in extra time</a></li></ul></aside></main>
<footer>Copyright 2024 The Valley Courier. All rights reserved. Privacy policy. Terms.</footer>
</body></html>"""
ARTICLE = ("Three rivers burst their banks", "roads in the lower valley", "spring planting")
CHROME = ("cookies", "Subscribe", "Most read", "Copyright", "Council approves")


def frame(**columns: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        {k: pd.array(v, dtype=pd.ArrowDtype(pa.string())) for k, v in columns.items()}
    )


def test_extract_keeps_the_article_and_drops_the_page_around_it() -> None:
    df = frame(url=["http://courier.test/a/1", "http://courier.test/a/2"], html=[PAGE, None])
    out = Extract()(df)
    text = out["text"][0]
    assert all(s in text for s in ARTICLE), text
    assert not any(s in text for s in CHROME), text
    assert out["title"][0] == "Rivers rise as storms sweep the north"
    assert out["author"][0] == "Hana Okafor"
    assert out["date"][0] == "2024-03-14"
    assert out.loc[1, ["text", "title", "author", "date"]].isna().all()
    assert list(out["html"]) == list(df["html"])  # the page itself stays, as crawled


def test_extract_fills_metadata_only_where_the_recipe_gave_none() -> None:
    df = frame(url=["u1", "u2"], html=[PAGE, PAGE], title=["From the selector", None])
    out = Extract(metadata=("title",))(df)
    assert list(out["title"]) == ["From the selector", "Rivers rise as storms sweep the north"]
    assert "author" not in out.columns


def test_normalize_unicode_controls_and_whitespace() -> None:
    messy = (
        "\ufeffThe  \ufb01nal\u00a0score:\t１２–３\x00\n\n\n\n  Second\u200b para\u00adgraph \r\n"
    )
    assert normalize_text(messy) == "The final score: 12–3\n\nSecond paragraph"
    assert normalize_text("caf\u0065\u0301 ²") == "café 2"
    df = frame(body=[messy, " \u200b ", None], title=["  A  title ", "b", "c"])
    out = Normalize(columns=("body",))(df)
    assert list(out["body"].astype(object).where(out["body"].notna(), None)) == [
        "The final score: 12–3\n\nSecond paragraph",
        None,  # nothing left: null, so not_null says so
        None,
    ]
    assert out["title"][0] == "  A  title "  # only the columns named


def test_normalize_takes_ascii_text_as_the_regexes_do() -> None:
    """ASCII text takes a faster byte path; it must give what the regexes give."""
    import random

    from ingestion.transforms.normalize import normalize_unicode

    rng = random.Random()
    alphabet = "ab c\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x00\x08\x0e\x7f  \n\n"
    texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 60))) for _ in range(2000)]
    texts += ["\r\n\r\n\r\nx", "\r\x00\n", "a\r\rb", "  \t ", "x\x1cy", "\n\n\n\n"]
    for text in texts:
        assert normalize_text(text) == normalize_unicode(text), repr(text)


def verdicts_agree(texts: list[str]) -> None:
    """The batch walk gives py3langid's own verdict on each text's first MAX_CHARS
    characters; the probability differs only by float32 rounding in another order."""
    from ingestion.transforms.language import MAX_CHARS, classify_batch, identifier

    ident = identifier()
    codes, scores = classify_batch(ident, texts)
    for text, code, score in zip(texts, codes, scores, strict=True):
        want, probability = ident.classify(text[:MAX_CHARS])
        assert code == want, text[:80]
        assert abs(score - probability) < 1e-4, text[:80]


def test_batch_language_is_py3langids_verdict_on_the_demo_and_many_languages() -> None:
    from harvest.demosite import generate

    site = generate(120, seed=11)
    bodies = ["\n".join(a.paragraphs) for a in site.articles]
    german = "Der Bundestag hat am Donnerstag ein neues Gesetz beschlossen. " * 10
    verdicts_agree(
        [
            *bodies,
            "Le gouvernement a annoncé mardi un nouveau plan pour les écoles du pays.",
            "El presidente anunció ayer nuevas medidas económicas para el país.",
            "Правительство объявило во вторник о новом плане для школ страны.",
            "政府は火曜日に国内の学校のための新しい計画を発表した。",
            "ALL CAPITALS ARE READ AS LOWER CASE BY PY3LANGID, SO IT IS HERE.",
            "!!! ??? ...",  # no feature at all
            "The rest is German. " * 200 + german,  # only the first 3,000 characters count
        ]
    )


def test_batch_language_is_py3langids_verdict_on_ag_news(ag_news: Path) -> None:
    news = pd.read_csv(ag_news, header=None, names=["label", "title", "text"], nrows=1500)
    verdicts_agree([f"{t}. {b}" for t, b in zip(news["title"], news["text"], strict=True)])


def test_language_of_a_few_sentences() -> None:
    texts = [
        "The central bank left interest rates unchanged on Thursday, citing slowing growth.",
        "Der Bundestag hat am Donnerstag mit großer Mehrheit ein neues Gesetz beschlossen.",
        "Le gouvernement a annoncé mardi un nouveau plan pour les écoles du pays.",
        "El presidente anunció ayer nuevas medidas económicas para el país.",
        "Too short",
        None,
    ]
    out = Language(column="body")(frame(body=texts))
    assert list(out["language"][:4]) == ["en", "de", "fr", "es"]
    assert (out["language_score"][:4] > 0.9).all()
    assert out.loc[4:, ["language", "language_score"]].isna().all().all()
    only = Language(column="body", languages=("en", "de"))(frame(body=texts[2:3]))
    assert only["language"][0] in {"en", "de"}


def test_steps_default_and_in_order() -> None:
    assert [s.name for s in parse_steps(None, "body")] == list(DEFAULT_STEPS)
    assert parse_steps([], "body") == ()
    steps = parse_steps(
        ["extract", {"normalize": {"columns": ["text", "title"]}}, "language"], "text"
    )
    out = apply_steps(frame(url=["u"], html=[PAGE.replace("Three", "Three\u00a0 ")]), steps)
    assert out["text"][0].startswith("Rivers rise as storms sweep the north\nThree rivers")
    assert "\u00a0" not in out["text"][0] and out["language"][0] == "en"


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        ("extract", "", "a list of steps"),
        (["translate"], "[0]", "unknown step"),
        ([{"extract": {"mode": "turbo"}}], "[0].mode", "one of"),
        ([{"normalize": {"colour": 1}}], "[0].colour", "unknown option"),
        ([{"normalize": {"columns": []}}], "[0].columns", "non-empty list"),
        ([{"language": {"min_chars": 0}}], "[0].min_chars", ">= 1"),
        ([{"language": {"languages": ["xx"]}}], "[0].languages", "ISO 639-1"),
        ([{"normalize": "body"}], "[0].normalize", "mapping"),
    ],
)
def test_bad_steps_name_the_key(raw: Any, key: str, words: str) -> None:
    with pytest.raises(StepError, match=words) as info:
        parse_steps(raw, "body")
    assert info.value.key == key


def recipe(**changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    raw.update(changes)
    return dict(raw)


def test_recipe_lists_its_steps_and_errors_name_them() -> None:
    demo = load_recipe("demo", ROOT / "sources")
    assert [s.name for s in demo.steps] == list(DEFAULT_STEPS)
    fields = {"html": {"xpath": "/html", "type": "text"}, "title": {"css": "h1::text"}}
    r = parse_recipe(
        recipe(
            fields=fields,
            text_field="text",
            steps=["extract", "normalize", "language"],
            expectations=[{"expect": "length_between", "column": "text", "min": 30}],
        ),
        "x.yaml",
    )
    assert [s.name for s in r.steps] == ["extract", "normalize", "language"]
    assert r.steps[1].inputs == ("text",)
    cases = [
        (recipe(steps=[{"extract": {"mode": "turbo"}}]), "steps[0].mode"),
        (recipe(steps=["extract"]), "steps[0]"),  # the demo recipe has no html field
        (recipe(steps=[{"normalize": {"columns": ["summary"]}}]), "steps[0]"),
        (recipe(fields=fields, text_field="text", steps=["normalize"]), "text_field"),
        (
            recipe(steps=[], expectations=[{"expect": "not_null", "column": "language"}]),
            "expectations[0].column",
        ),
    ]
    for raw, key in cases:
        with pytest.raises(RecipeError) as info:
            parse_recipe(raw, "x.yaml")
        assert info.value.key == key and "x.yaml" in str(info.value)


def test_gate_runs_the_recipe_steps_before_its_checks(tmp_path: Path) -> None:
    """Pages land in raw as HTML; curated gets their main text, normalised, with a language."""
    from validation.gate import curate

    fields = {"html": {"xpath": "/html", "type": "text"}}
    r = parse_recipe(
        recipe(
            fields=fields,
            text_field="text",
            steps=["extract", "normalize", "language"],
            expectations=[{"expect": "length_between", "column": "text", "min": 100}],
        ),
        "x.yaml",
    )
    pages = {
        "http://courier.test/a/1": PAGE,
        "http://courier.test/a/2": PAGE.replace("Three rivers", "Three  rivers\u00a0"),
        "http://courier.test/a/3": "<html><body><nav>Home News</nav></body></html>",
    }
    rows = [
        {
            "html": html,
            "source": "x",
            "url": url,
            "crawl_id": "c",
            "http_status": 200,
            "fetched_at": pd.Timestamp("2024-01-01", tz="UTC"),
            "content_sha256": content_sha256({"html": html}),
        }
        for url, html in pages.items()
    ]
    lake = Lake(tmp_path / "lake")
    lake.append("raw/x", pa.Table.from_pylist(rows))
    result = curate(lake, "x", gate_spec(r), tmp_path / "reports")
    # the second page differs from the first in whitespace alone: normalised, it is a copy
    assert (result.curated, result.quarantined, result.near_duplicates_dropped) == (1, 1, 1)
    curated = lake.read("curated/x").to_pylist()[0]
    assert curated["text"].startswith("Rivers rise as storms sweep the north\nThree rivers")
    assert all(s in curated["text"] for s in ARTICLE)
    assert curated["title"] == "Rivers rise as storms sweep the north"
    assert curated["language"] == "en"
    quarantined = lake.read("quarantine/x").to_pylist()[0]
    assert quarantined["url"].endswith("/a/3")
    # a page with no article gives next to no text
    assert quarantined["failed_expectations"] == ["length_between(text)[100,]"]
