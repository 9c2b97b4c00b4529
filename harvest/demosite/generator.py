"""Articles for the demo site: synthetic by default, or real ones from a CSV corpus.

Synthetic classes share most of their vocabulary, and each article leans on its topic by
a different amount, so a classifier trained on them lands well below 100%.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
COPIES = ("duplicate", "near_duplicate")  # planted kinds that copy another article

TOPIC_WORDS = {
    "World": "government minister election parliament border troops embassy treaty protest "
    "president refugees ceasefire diplomats sanctions capital rebels vote summit coalition "
    "military foreign united nations regime opposition crisis peace talks province",
    "Sports": "match season coach striker goal league championship tournament injury team "
    "victory defeat score players fans stadium final cup medal race olympic title "
    "midfielder innings quarterback playoff referee transfer",
    "Business": "shares profit revenue market investors quarter earnings stock bank merger "
    "deal prices oil economy growth inflation dollar company sales forecast bond "
    "acquisition retail debt interest rates percent",
    "Sci/Tech": "software internet computer researchers study space launch network device "
    "chip data scientists technology wireless users online satellite microsoft "
    "google browser security virus planet genome laboratory",
}
SHARED_WORDS = [
    "the",
    "a",
    "of",
    "to",
    "in",
    "and",
    "for",
    "on",
    "with",
    "said",
    "new",
    "year",
    "week",
    "report",
    "officials",
    "people",
    "today",
    "after",
    "over",
    "more",
    "than",
    "first",
    "last",
    "two",
    "three",
    "million",
    "plan",
    "group",
    "city",
    "country",
    "national",
    "state",
    "public",
    "record",
    "expected",
    "major",
    "early",
    "late",
    "long",
    "time",
    "day",
    "could",
    "would",
    "may",
    "will",
    "also",
    "according",
    "statement",
    "announced",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "during",
    "since",
    "while",
    "despite",
    "amid",
    "following",
    "ahead",
    "against",
    "under",
    "between",
    "record",
    "strong",
    "weak",
    "big",
    "small",
    "high",
    "low",
    "top",
    "world",
    "business",
    "sports",
    "technology",
    "science",
    "news",
    "local",
    "global",
    "industry",
    "leaders",
    "official",
    "support",
    "plans",
    "future",
    "number",
    "several",
    "months",
    "years",
    "hours",
    "back",
    "end",
    "win",
    "lose",
    "rise",
    "fall",
    "deal",
    "talks",
    "move",
    "cut",
    "boost",
    "push",
]
FIRST = [
    "Ana",
    "Ben",
    "Chen",
    "Dana",
    "Eli",
    "Fatima",
    "Gus",
    "Hana",
    "Ivan",
    "Jun",
    "Kofi",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
]
LAST = [
    "Adams",
    "Brook",
    "Costa",
    "Diaz",
    "Evans",
    "Fox",
    "Garcia",
    "Hale",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Moreau",
    "Ng",
    "Okafor",
]


@dataclass
class Article:
    slug: str
    label: str
    title: str
    paragraphs: list[str]
    author: str
    published: str
    tags: list[str]
    # "", "empty_body", "bad_date", "too_long", "duplicate" or "near_duplicate"
    planted: str = ""
    original: str = ""  # for a duplicate or near duplicate, the slug it copies

    @property
    def path(self) -> str:
        return f"/article/{self.slug}"


@dataclass
class Site:
    articles: list[Article]
    per_page: int = 20
    by_slug: dict[str, Article] = field(init=False)

    def __post_init__(self) -> None:
        self.by_slug = {a.slug: a for a in self.articles}

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.articles) // self.per_page))

    def listing(self, page: int) -> list[Article]:
        start = (page - 1) * self.per_page
        return self.articles[start : start + self.per_page]

    @property
    def planted_invalid(self) -> list[Article]:
        return [a for a in self.articles if a.planted and a.planted not in COPIES]

    @property
    def planted_duplicates(self) -> list[Article]:
        return [a for a in self.articles if a.planted == "duplicate"]

    @property
    def planted_near_duplicates(self) -> list[Article]:
        return [a for a in self.articles if a.planted == "near_duplicate"]

    def truth(self, base_url: str, section: str = "") -> dict[str, object]:
        """Ground truth keyed by URL, for the section (``""``, ``/js``, ``/guarded``) given."""
        base = base_url.rstrip("/") + section
        return {
            "site_articles": len(self.articles),
            "classes": {base + a.path: a.label for a in self.articles},
            "invalid": {base + a.path: a.planted for a in self.planted_invalid},
            "duplicates": {
                base + a.path: f"{base}/article/{a.original}" for a in self.planted_duplicates
            },
            "near_duplicates": {
                base + a.path: f"{base}/article/{a.original}" for a in self.planted_near_duplicates
            },
        }


def planted_counts(n: int) -> tuple[int, int]:
    """(invalid articles of each of the three kinds, duplicates) for a site of n pages."""
    return max(1, n // 100), max(1, n // 40)


def near_duplicate_count(n: int) -> int:
    """Near duplicates (an article again with small edits) planted in a site of n pages."""
    return max(1, n // 40)


def generate(n: int = 400, seed: int = 7, corpus: str | Path | None = None) -> Site:
    each_invalid, n_dup = planted_counts(n)
    n_near = near_duplicate_count(n)
    n_invalid = 3 * each_invalid
    n_base = n - n_dup - n_near
    if n_base - n_invalid < n_dup + n_near:
        least = n_invalid + 2 * (n_dup + n_near)
        raise ValueError(f"--articles {n} is too small: at least {least} needed")
    rng = random.Random(seed)
    if corpus is not None:
        texts = corpus_articles(corpus, n_base, rng)
    else:
        texts = [synthetic_article(rng) for _ in range(n_base)]
    articles = []
    start = date(2024, 1, 1)
    for i, (label, title, paragraphs) in enumerate(texts):
        articles.append(
            Article(
                slug=f"{i:05d}-{_slug(title)}",
                label=label,
                title=title,
                paragraphs=paragraphs,
                author=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                published=(start + timedelta(days=rng.randrange(700))).isoformat(),
                tags=sorted(set(rng.sample(SHARED_WORDS[20:], 3))),
            )
        )
    kinds = ["empty_body", "bad_date", "too_long"] * each_invalid
    for article, kind in zip(rng.sample(articles, n_invalid), kinds, strict=True):
        plant(article, kind)
    valid = [a for a in articles if not a.planted]
    originals = rng.sample(valid, n_dup + n_near)
    for original in originals[:n_dup]:
        articles.append(
            Article(
                slug=f"{original.slug}-copy",
                label=original.label,
                title=original.title,
                paragraphs=list(original.paragraphs),
                author=original.author,
                published=original.published,
                tags=list(original.tags),
                planted="duplicate",
                original=original.slug,
            )
        )
    for original in originals[n_dup:]:
        articles.append(near_copy(original, rng))
    rng.shuffle(articles)
    return Site(articles)


def plant(article: Article, kind: str) -> None:
    article.planted = kind
    if kind == "empty_body":
        article.paragraphs = []
    elif kind == "bad_date":
        article.published = "2024-13-45"
    elif kind == "too_long":
        text = " ".join(article.paragraphs) or article.title
        article.paragraphs = [text] * (200_000 // max(1, len(text)) + 1)


def near_copy(original: Article, rng: random.Random) -> Article:
    """The article again as another outlet or a later edit has it: a few words replaced,
    inserted or deleted (about one in twenty, one to four) and the title punctuated anew."""
    paragraphs = [p.split() for p in original.paragraphs]
    n_words = sum(len(p) for p in paragraphs)
    for _ in range(min(4, max(1, n_words // 20))):
        words = rng.choice([p for p in paragraphs if p])
        i = rng.randrange(len(words))
        edit = rng.choice(("replace", "insert", "delete"))
        if edit == "replace":
            words[i] = rng.choice(SHARED_WORDS)
        elif edit == "insert" or len(words) < 5:
            words.insert(i, rng.choice(SHARED_WORDS))
        else:
            del words[i]
    title = original.title.rstrip(".!?")
    title = rng.choice((f"{title}!", f"{title}.", f"Update: {title}", title.replace(" ", " - ", 1)))
    return Article(
        slug=f"{original.slug}-update",
        label=original.label,
        title=title,
        paragraphs=[" ".join(p) for p in paragraphs],
        author=original.author,
        published=original.published,
        tags=list(original.tags),
        planted="near_duplicate",
        original=original.slug,
    )


def synthetic_article(rng: random.Random) -> tuple[str, str, list[str]]:
    label = rng.choice(CLASSES)
    # how strongly this article leans on its own topic; weak ones are the hard cases
    strength = rng.uniform(0.03, 0.22)
    others = [c for c in CLASSES if c != label]
    topic = TOPIC_WORDS[label].split()

    def word() -> str:
        r = rng.random()
        if r < strength:
            return rng.choice(topic)
        if r < strength + 0.06:
            return rng.choice(TOPIC_WORDS[rng.choice(others)].split())
        return rng.choice(SHARED_WORDS)

    def sentence(lo: int, hi: int) -> str:
        words = [word() for _ in range(rng.randint(lo, hi))]
        return " ".join(words).capitalize()

    title = sentence(5, 9)
    paragraphs = [
        " ".join(sentence(8, 16) + "." for _ in range(rng.randint(2, 4)))
        for _ in range(rng.randint(2, 4))
    ]
    return label, title, paragraphs


def corpus_articles(
    path: str | Path, n: int, rng: random.Random
) -> list[tuple[str, str, list[str]]]:
    """n articles drawn from an AG News style CSV: class index (1-4), title, description."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if len(row) != 3 or not row[0].strip().isdigit():
                raise ValueError(f"{path}:{line}: expected class index, title, description")
            index = int(row[0]) - 1
            if not 0 <= index < len(CLASSES):
                raise ValueError(f"{path}:{line}: class index {row[0]} is not 1-{len(CLASSES)}")
            # the corpus writes line breaks inside a field as a backslash
            body = " ".join(row[2].replace("\\", " ").split())
            title = " ".join(row[1].split())
            rows.append((CLASSES[index], title, [body]))
    if len(rows) < n:
        raise ValueError(f"{path} has {len(rows)} articles, fewer than the {n} asked for")
    return rng.sample(rows, n)


def _slug(title: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in title.lower()).split()
    return "-".join(words[:6]) or "untitled"
