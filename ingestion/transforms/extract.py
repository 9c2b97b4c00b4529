"""``extract``: the main text and metadata of an HTML page, by trafilatura.

Chosen by ``bench/extract.py``: of the extractors installed here, trafilatura favouring
precision keeps the most of an article and the least of the page around it (``fast``
is about three times quicker and leaves more boilerplate in). The main text goes to ``to``;
metadata (title, author, date, ...) fill the columns of the same name where a recipe
field did not already give a value, since a recipe's own selector is the surer one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from ingestion.transforms.base import Step, StepError, check_keys, column_name, strings, values

METADATA = ("title", "author", "date", "sitename", "description")
# trafilatura's own trade-offs: fast skips its fallback extractors
MODES: dict[str, dict[str, Any]] = {
    "balanced": {},
    "precision": {"favor_precision": True},
    "recall": {"favor_recall": True},
    "fast": {"fast": True},
}


def extract_page(html: str, url: str | None, mode: str, metadata: bool) -> dict[str, Any]:
    """Main text and metadata of one page; empty where trafilatura finds no main text."""
    import trafilatura  # a tenth of a second: only for recipes that extract

    doc = trafilatura.bare_extraction(
        html,
        url=url,
        with_metadata=metadata,
        include_comments=False,
        include_images=False,
        include_links=False,
        **MODES[mode],
    )
    if doc is None:
        return {}
    return {k: getattr(doc, k, None) for k in ("text", *METADATA)}


@dataclass(frozen=True)
class Extract(Step):
    name: ClassVar[str] = "extract"
    html: str = "html"
    to: str = "text"
    metadata: tuple[str, ...] = ("title", "author", "date")
    mode: str = "precision"

    @classmethod
    def from_options(cls, options: dict[str, Any], text_field: str) -> Extract:
        check_keys(options, {"html", "to", "metadata", "mode"})
        metadata = options.get("metadata", list(cls.metadata))
        if not isinstance(metadata, list) or any(m not in METADATA for m in metadata):
            raise StepError("metadata", f"a list from {', '.join(METADATA)}")
        mode = options.get("mode", cls.mode)
        if mode not in MODES:
            raise StepError("mode", f"one of {', '.join(MODES)}")
        return cls(
            html=column_name(options, "html", "html"),
            to=column_name(options, "to", "text"),
            metadata=tuple(metadata),
            mode=mode,
        )

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.html,)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.to, *self.metadata)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        urls = values(df, "url") if "url" in df.columns else [None] * len(df)
        pages = [
            extract_page(html, url, self.mode, bool(self.metadata)) if html else {}
            for html, url in zip(values(df, self.html), urls, strict=True)
        ]
        out = df.copy()
        out[self.to] = strings([p.get("text") or None for p in pages])
        for key in self.metadata:
            found = [p.get(key) or None for p in pages]
            if key in df.columns:
                given = values(df, key)
                found = [g if g is not None else f for g, f in zip(given, found, strict=True)]
            if all(v is None or isinstance(v, str) for v in found):
                out[key] = strings(found)
        return out
