from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import requests

from harvest.demosite import CLASSES, DemoSite, Guard, Site, generate
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
    classes, duplicates = truth["classes"], truth["duplicates"]
    assert isinstance(classes, dict) and isinstance(duplicates, dict)
    assert set(classes.values()) <= set(CLASSES)
    for copy, original in duplicates.items():
        assert classes[copy] == classes[original]


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


def test_js_section_hides_content_from_plain_http(demo_site: DemoSite, site: Site) -> None:
    article = next(a for a in site.articles if not a.planted)
    html = requests.get(f"{demo_site.url}/js{article.path}", timeout=5).text
    assert article.paragraphs[0] not in html
    assert 'class="body"' not in html
    data = requests.get(f"{demo_site.url}/js/api/{article.slug}.json", timeout=5).json()
    assert data["paragraphs"] == article.paragraphs
    listing = requests.get(f"{demo_site.url}/js/", timeout=5).text
    assert f'href="/js{site.articles[0].path}"' in listing


def test_guard_bans_a_client_address_after_its_budget(site: Site) -> None:
    with DemoSite(site, guard=Guard(limit=5, window=60, ban_seconds=60)) as server:
        codes = [requests.get(f"{server.url}/guarded/", timeout=5).status_code for _ in range(7)]
        assert codes == [200] * 5 + [403, 403]
        blocked = requests.get(f"{server.url}/guarded/", timeout=5).text
        assert 'class="captcha"' in blocked
        assert requests.get(f"{server.url}/", timeout=5).status_code == 200  # only the section


def test_guard_throttles_with_retry_after(site: Site) -> None:
    with DemoSite(site, guard=Guard(limit=3, window=30, ban_seconds=0)) as server:
        responses = [requests.get(f"{server.url}/guarded/", timeout=5) for _ in range(4)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        assert 1 <= int(responses[-1].headers["Retry-After"]) <= 30


def test_demo_site_command_serves_the_guard_regime_it_is_given() -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT, run_harvest

    bad = run_harvest(["demo-site", "--guard-regime", "nosuch"], {}, check=False)
    assert bad.returncode == 2 and "regime 'nosuch': one of window, fixed, bucket" in bad.stderr
    args = [
        "demo-site",
        "--port",
        "0",
        "--articles",
        "20",
        "--guard-limit",
        "2",
        "--guard-window",
        "60",
        "--guard-ban",
        "30",
        "--guard-ban-status",
        "429",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", *args],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        found = re.search(r"demo site on (http://\S+):", proc.stderr.readline())
        assert found, "the command did not say where it serves"
        answers = [requests.get(found.group(1) + "/guarded/", timeout=10) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        # a long block, told to nobody: no Retry-After
        assert "Retry-After" not in answers[2].headers
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def listing_links(html: str) -> list[str]:
    nav = html.split('<nav class="pagination">', 1)[1]
    return re.findall(r'href="([^"]+)"', nav)


def test_numbered_pagination_links_the_first_last_and_near_pages() -> None:
    site = generate(300, seed=3)  # 15 pages: the window leaves some out
    with DemoSite(site, pagination="numbered") as numbered:
        page = requests.get(f"{numbered.url}/page/8", timeout=5).text
        first = requests.get(numbered.url + "/", timeout=5).text
    near = [f"/page/{n}" for n in range(3, 14) if n != 8]
    assert set(listing_links(page)) == {"/", *near, f"/page/{site.pages}"}
    assert '<span class="current">8</span>' in page
    assert 'class="prev" href="/page/7"' in page and 'class="next" href="/page/9"' in page
    assert set(listing_links(first)) == {*(f"/page/{n}" for n in range(2, 7)), "/page/15"}


def test_chain_pagination_is_the_default(demo_site: DemoSite) -> None:
    page = requests.get(f"{demo_site.url}/page/3", timeout=5).text
    assert listing_links(page) == ["/page/2", "/page/4"]
    with pytest.raises(ValueError, match="pagination 'pages': one of chain, numbered"):
        DemoSite(demo_site.site, pagination="pages")


def test_demo_site_command_serves_numbered_pagination() -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT, run_harvest

    bad = run_harvest(["demo-site", "--pagination", "pages"], {}, check=False)
    assert bad.returncode == 2 and "one of chain, numbered" in bad.stderr
    args = ["demo-site", "--port", "0", "--articles", "200", "--pagination", "numbered"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        found = re.search(r"demo site on (http://\S+):", proc.stderr.readline())
        assert found, "the command did not say where it serves"
        first = requests.get(found.group(1) + "/", timeout=10).text
        assert "/page/10" in listing_links(first)  # the last of 10 pages
    finally:
        proc.terminate()
        proc.wait(timeout=30)
