"""An example ``parse:`` hook for news articles whose byline is one line of text, "By NAME
on DATE", rather than marked-up parts: the kind of field a selector cannot split.

In a recipe: ``parse: hooks.news:byline``, with ``author`` and ``published`` among its
fields without a selector (the hook fills them).
"""

from __future__ import annotations

import re
from typing import Any

BYLINE = re.compile(r"^\s*By\s+(?P<author>.+?)\s+on\s+(?P<date>\d{4}-\d{2}-\d{2})\s*$")


def byline(response: Any, soup: Any) -> dict[str, Any] | None:
    """``author`` and ``published`` from the page's byline, or None when it has none."""
    line = soup.select_one("p.byline")
    found = BYLINE.match(line.get_text(" ", strip=True)) if line is not None else None
    if found is None:
        return None
    return {"author": found["author"], "published": found["date"]}
