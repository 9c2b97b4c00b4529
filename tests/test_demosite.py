from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import requests

from harvest.demosite import CLASSES, DemoSite, Site, generate
from harvest.demosite.generator import planted_counts


def test_same_seed_same_site() -> None:
    a, b = generate(80, seed=11), generate(80, seed=11)
    assert [x.slug for x in a.articles] == [x.slug for x in b.articles]
    assert [x.paragraphs for x in a.articles] == [x.paragraphs for x in b.articles]
    assert [x.slug for x in generate(80, seed=12).articles] != [x.slug for x in a.articles]


def test_planted_counts_and_truth(site: Site) -> None:
    each, dups = planted_counts(len(site.articles))
    assert len(site.planted_invalid) == 3 * each
    assert {a.planted for a in site.planted_invalid} == {"empty_body", "bad_date", "too_long"}
    assert len(site.planted_duplicates) == dups
    truth = site.truth("http://h:1")
    assert truth["site_articles"] == len(site.articles)
    assert set(truth["classes"].values()) <= set(CLASSES)  # type: ignore[union-attr]
    for copy, original in truth["duplicates"].items():  # type: ignore[union-attr]
        assert truth["classes"][copy] == truth["classes"][original]  # type: ignore[index]


def test_synthetic_classes_share_vocabulary(site: Site) -> None:
    """Every class uses the shared words, so the class is not given away by any one word."""
    words_by_class: dict[str, set[str]] = {c: set() for c in CLASSES}
    for a in site.articles:
        words_by_class[a.label] |= set(" ".join(a.paragraphs).lower().split())
    common = set.intersection(*words_by_class.values())
    assert len(common) > 50


def test_served_over_http(demo_site: DemoSite, site: Site) -> None:
    first = requests.get(demo_site.url + "/", timeout=5)
    assert first.status_code == 200
    links = re.findall(r'class="article-link" href="([^"]+)"', first.text)
    assert len(links) == site.per_page
    assert 'class="next" href="/page/2"' in first.text
    last = requests.get(f"{demo_site.url}/page/{site.pages}", timeout=5)
    assert 'class="next"' not in last.text
    article = site.articles[0]
    page = requests.get(demo_site.url + article.path, timeout=5).text
    assert article.author in page
    assert article.label not in re.sub(r"<[^>]+>", " ", page).split()  # the class is not shown
    assert requests.get(demo_site.url + "/article/nope", timeout=5).status_code == 404


def test_corpus_mode_serves_real_articles(ag_news: Path) -> None:
    site = generate(200, seed=1, corpus=ag_news)
    assert len(site.articles) == 200
    bodies = [a for a in site.articles if not a.planted]
    assert all(a.label in CLASSES for a in bodies)
    with ag_news.open(newline="", encoding="utf-8") as f:
        label_of = {" ".join(t.split()): CLASSES[int(c) - 1] for c, t, _ in csv.reader(f)}
    assert all(label_of[a.title] == a.label for a in bodies)


def test_corpus_with_bad_rows_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('"1","ok","fine text"\n"9","title","body"\n')
    with pytest.raises(ValueError, match=r"bad.csv:2: class index 9"):
        generate(10, corpus=path)
