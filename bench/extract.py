"""Main-text extraction benchmark: trafilatura's modes against the other extractors here.

``python -m bench.extract [--pages N]``

Pages carry real article text, AG News titles and descriptions from
``../shared/datasets/ag_news_test.csv`` (skipped, with a message, when absent), in two
layouts: the demo site's article page as ``harvest demo-site`` serves it, and a news
portal page with the chrome real sites wrap around an article (menu, most-read list with
other articles' titles, related stories, newsletter box, comments, cookie banner, footer).
The reference text is the article's title and description.

Quality is bag-of-words overlap with the reference: precision (the share of extracted
words that belong to the article; the rest is boilerplate left in), recall (the share of
the article's words extracted) and F1, averaged over pages; a page an extractor returns
nothing for counts as 0. Speed is pages a second in this one process, parsing included.
Prints a table and writes ``bench/results/extract.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from importlib.metadata import version
from pathlib import Path
from typing import Any

import justext
import lxml.html
import trafilatura
from trafilatura.baseline import baseline
from trafilatura.readability_lxml import Document

from harvest.demosite.generator import Article, corpus_articles
from harvest.demosite.server import render_article

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "datasets" / "ag_news_test.csv"
RESULTS = ROOT / "bench" / "results" / "extract.json"
SECTIONS = ["World", "Business", "Technology", "Sports", "Science", "Opinion", "Video", "Local"]
PORTAL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} | The Daily Ledger</title>
<meta name="author" content="{author}"><meta property="og:site_name" content="The Daily Ledger">
<script>window.dataLayer = window.dataLayer || []; function gtag(){{dataLayer.push(arguments);}}
</script><style>.nav a {{ margin: 0 4px }}</style></head>
<body>
<div id="cookie-banner" class="consent">We use cookies to improve your experience and to show
you personalised advertising. By continuing to browse you agree to our cookie policy.
<button>Accept all</button> <button>Manage settings</button></div>
<header class="site-header"><a class="logo" href="/">The Daily Ledger</a>
<nav class="nav">{nav}</nav><form class="search"><input name="q" placeholder="Search">
</form><a href="/subscribe">Subscribe now: first month free</a></header>
<div class="breadcrumbs"><a href="/">Home</a> &rsaquo; <a href="/{section}">{section}</a></div>
<main><article class="story">
<h1 class="headline">{title}</h1>
<div class="byline">By <a rel="author" href="/authors/x">{author}</a>,
<time datetime="{published}">{published}</time> &middot; 4 min read</div>
<div class="share">Share on Facebook Share on X Email this story Copy link</div>
<div class="story-body">{paragraphs}</div>
<div class="tags">Topics: {tags}</div>
</article>
<aside class="related"><h2>Related stories</h2><ul>{related}</ul></aside>
<section class="newsletter"><h2>Get the morning briefing</h2><p>The stories you need to
know about, delivered to your inbox every weekday morning. Sign up for free and unsubscribe
at any time.</p><input type="email" placeholder="Your email"><button>Sign up</button>
</section>
<section class="comments"><h2>Comments (2)</h2>
<div class="comment"><b>reader_42</b> said: Great coverage as always, thanks for keeping us
informed on this one.</div>
<div class="comment"><b>j.smith</b> said: I disagree with the framing here, but the facts
are useful. Looking forward to the follow-up piece.</div></section>
</main>
<aside class="most-read"><h2>Most read</h2><ol>{most_read}</ol></aside>
<footer><p>&copy; 2024 The Daily Ledger Media Group. All rights reserved.</p>
<ul><li><a href="/about">About us</a></li><li><a href="/contact">Contact</a></li>
<li><a href="/privacy">Privacy policy</a></li><li><a href="/terms">Terms of use</a></li>
<li><a href="/advertise">Advertise with us</a></li><li><a href="/jobs">Careers</a></li></ul>
</footer></body></html>"""


def portal_page(article: Article, others: list[Article], rng: random.Random) -> str:
    link = '<li><a href="/story/{i}">{t}</a></li>'
    picks = rng.sample(others, 9)
    return PORTAL.format(
        title=escape(article.title),
        author=escape(article.author),
        published=article.published,
        section=rng.choice(SECTIONS),
        nav=" ".join(f'<a href="/{s.lower()}">{s}</a>' for s in SECTIONS),
        paragraphs="".join(f"<p>{escape(p)}</p>" for p in article.paragraphs),
        tags=", ".join(escape(t) for t in article.tags),
        related="".join(link.format(i=i, t=escape(a.title)) for i, a in enumerate(picks[:4])),
        most_read="".join(link.format(i=i, t=escape(a.title)) for i, a in enumerate(picks[4:])),
    )


# --- the extractors, each HTML in, plain text out


def trafilatura_mode(**options: Any) -> Callable[[str], str]:
    def run(html: str) -> str:
        return trafilatura.extract(html, include_comments=False, **options) or ""

    return run


def trafilatura_baseline(html: str) -> str:
    return baseline(html)[1]


def jus_text(html: str) -> str:
    paragraphs = justext.justext(html.encode("utf-8"), justext.get_stoplist("English"))
    return "\n".join(p.text for p in paragraphs if not p.is_boilerplate)


def readability(html: str) -> str:
    summary = Document(lxml.html.fromstring(html)).summary()
    return lxml.html.fromstring(summary).text_content() if summary.strip() else ""


def lxml_body(html: str) -> str:
    tree = lxml.html.fromstring(html)
    for bad in tree.xpath("//script|//style"):
        bad.drop_tree()
    return tree.text_content()


EXTRACTORS: dict[str, Callable[[str], str]] = {
    "trafilatura (default)": trafilatura_mode(),
    "trafilatura favor_precision": trafilatura_mode(favor_precision=True),
    "trafilatura favor_recall": trafilatura_mode(favor_recall=True),
    "trafilatura fast": trafilatura_mode(fast=True),
    "trafilatura baseline": trafilatura_baseline,
    "justext": jus_text,
    "readability (trafilatura's port)": readability,
    "lxml text_content": lxml_body,
}


def words(text: str) -> Counter[str]:
    return Counter(re.findall(r"\w+", text.lower()))


def overlap(extracted: str, reference: str) -> tuple[float, float, float]:
    got, want = words(extracted), words(reference)
    common = sum((got & want).values())
    if not common:
        return 0.0, 0.0, 0.0
    precision, recall = common / sum(got.values()), common / sum(want.values())
    return precision, recall, 2 * precision * recall / (precision + recall)


def measure(extract: Callable[[str], str], pages: list[str], refs: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    texts = [extract(p) for p in pages]
    seconds = time.perf_counter() - started
    scores = [overlap(t, r) for t, r in zip(texts, refs, strict=True)]
    n = len(pages)
    return {
        "pages_per_s": round(n / seconds, 1),
        "precision": round(sum(s[0] for s in scores) / n, 4),
        "recall": round(sum(s[1] for s in scores) / n, 4),
        "f1": round(sum(s[2] for s in scores) / n, 4),
        "empty": sum(1 for t in texts if not t.strip()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=1000, help="articles in each layout")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not CORPUS.exists():
        print(f"skipped: {CORPUS} is absent (the shared datasets are not on this machine)")
        return 0
    rng = random.Random(args.seed)
    articles = [
        Article(f"a{i}", label, title, paragraphs, "Dana Fox", "2024-05-06", ["markets"])
        for i, (label, title, paragraphs) in enumerate(corpus_articles(CORPUS, args.pages, rng))
    ]
    refs = [a.title + "\n" + "\n".join(a.paragraphs) for a in articles]
    layouts = {
        "demo site": [render_article(a) for a in articles],
        "news portal": [portal_page(a, articles, rng) for a in articles],
    }
    results: dict[str, dict[str, Any]] = {}
    print(f"{args.pages} AG News articles a layout; bag-of-words overlap with title + text")
    print(f"{'extractor':34} {'layout':12} {'pages/s':>8} {'prec':>6} {'recall':>6} {'F1':>6}")
    for name, extract in EXTRACTORS.items():
        results[name] = {}
        for layout, pages in layouts.items():
            r = measure(extract, pages, refs)
            results[name][layout] = r
            print(
                f"{name:34} {layout:12} {r['pages_per_s']:8.0f} {r['precision']:6.3f} "
                f"{r['recall']:6.3f} {r['f1']:6.3f}"
                + (f"  ({r['empty']} empty)" * bool(r["empty"]))
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
                "versions": {p: version(p) for p in ("trafilatura", "justext", "lxml")},
                "pages_per_layout": args.pages,
                "seed": args.seed,
                "corpus": CORPUS.name,
                "results": results,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
