"""Text users control (class names, sources, licences, expectations) reads as itself in the
Markdown the project writes, checked by rendering it with a real CommonMark parser with
GitHub's tables (markdown-it-py)."""

from __future__ import annotations

import random
import string
from typing import Any

import pyarrow as pa
import pytest
from markdown_it import MarkdownIt

from ingestion.export import SourceNotes, card
from ingestion.markdown import md_code, md_escape
from training.report import markdown

HOSTILE = "a|b *x* <script>"
RENDER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
ALPHABET = "abcXYZ019 é" + string.punctuation


def table_rows(text: str) -> list[list[str]]:
    """Every table row of ``text`` rendered, as its cells' text; anything a cell holds other
    than text (emphasis, HTML, a link) shows as ``<its token type>``."""
    rows: list[list[str]] = []
    in_row = False
    for token in RENDER.parse(text):
        if token.type in ("tr_open", "tr_close"):
            in_row = token.type == "tr_open"
            rows += [[]] if in_row else []
        elif token.type == "inline" and in_row:
            parts = []
            for child in token.children or []:
                if child.type in ("text", "code_inline"):
                    parts.append(child.content)
                else:
                    parts.append(f"<{child.type}>")
            rows[-1].append("".join(parts))
    return rows


def names(seed: int, n: int = 300) -> list[str]:
    rng = random.Random(seed)
    drawn = ("".join(rng.choices(ALPHABET, k=rng.randint(1, 24))).strip() for _ in range(n))
    return [name or "x" for name in drawn]


@pytest.mark.parametrize("seed", range(4))
def test_any_text_is_one_intact_cell(seed: int) -> None:
    drawn = names(seed)
    lines = ["| escaped | code | n |", "| --- | --- | --- |"]
    lines += [f"| {md_escape(t)} | {md_code(t)} | {i} |" for i, t in enumerate(drawn)]
    assert table_rows("\n".join(lines))[1:] == [[t, t, str(i)] for i, t in enumerate(drawn)]


def test_escaping_shows_in_the_text() -> None:
    assert md_escape(HOSTILE) == r"a\|b \*x\* \<script\>"
    assert md_escape("line one\r\nline two") == "line one line two"
    # between letters an underscore emphasises nothing, so names stay readable
    assert md_escape("ROBOTSTXT_OBEY _x_") == r"ROBOTSTXT_OBEY \_x\_"
    assert md_code("length_between(body)") == "`length_between(body)`"
    assert md_code("a`b") == md_escape("a`b") == r"a\`b"


def test_dataset_card_rows_stay_intact() -> None:
    source = "s|`x`"
    data = pa.table(
        {
            "label": [HOSTILE, HOSTILE, "plain", "plain"],
            "split": ["train", "test", "train", "validation"],
            "source": [source] * 4,
        }
    )
    files = [
        {"split": s, "path": f"{s}.parquet", "rows": n}
        for s, n in (("train", 2), ("validation", 1), ("test", 1))
    ]
    meta = {"version": 3, "tables": {f"curated/{source}": 1}, "content_sha256": "ab"}
    licence, robots = "<img src=x onerror=alert(1)>", "*all* | [none](http://e)"
    checks: dict[str, Any] = {
        "runs": 1,
        "rows_checked": 5,
        "curated": 4,
        "quarantined": 1,
        "duplicates_dropped": 0,
        "near_duplicates_dropped": 0,
        "held": 0,
        "accepted": 0,
        "failures": {"rule|*x*": 1},
        "last_report": "/r/raw-v0.html",
    }
    text = card("d", meta, data, files, {source: SourceNotes(licence, robots)}, {source: checks})

    assert r"| a\|b \*x\* \<script\> | 1 | 0 | 1 | 2 |" in text
    rows = table_rows(text)
    assert [HOSTILE, "1", "0", "1", "2"] in rows
    assert ["plain", "1", "1", "0", "2"] in rows
    assert [source, "4", licence, robots] in rows
    html = RENDER.render(text)
    for markup in ("<script", "<img", "<em>", "<a ", "<del>"):
        assert markup not in html
    assert "rule|*x*" in html and "curated/s|`x`" in html


def test_model_report_rows_stay_intact() -> None:
    per_class = {
        c: {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 4}
        for c in (HOSTILE, "Sci/Tech", "~gone~")
    }
    summary = {
        "dataset": "d`x`",
        "dataset_version": 2,
        "device": "cpu",
        "best_epoch": 1,
        "epochs": 2,
        "best_val_macro_f1": 0.5,
        "config": {},
        "test": {"n": 12, "accuracy": 0.5, "macro_f1": 0.4, "per_class": per_class},
    }
    text = markdown(summary)
    rows = table_rows(text)
    for name in per_class:
        assert [name, "0.500", "0.250", "0.333", "4"] in rows
    html = RENDER.render(text)
    assert "<script" not in html and "<em>" not in html and "<del>" not in html
    assert "d`x`" in html
