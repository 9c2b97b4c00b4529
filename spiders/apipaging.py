"""How an API's pages follow one another, as positions a crawl can commit and resume from.

A position is a JSON value: a cursor (``""`` before the first), a page number, an offset,
or the URL of a next page (``next`` and ``link``). Page numbers and offsets are known
before the answers, so a crawl fetches many at once (``ahead``); a cursor or a next URL
comes only with the page before it, one at a time. A position is committed with the rows
of the pages before it (spiders/api.py), so that a crawl killed at any point resumes
from the page after the last one it committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

from spiders import apipath
from spiders.apirecipe import Paging

Position = str | int | None


class Paginator:
    def __init__(self, paging: Paging, start_url: str):
        self.paging = paging
        self.start_url = start_url
        self.style = paging.style
        # the size of a full page: the recipe's, or the largest page seen
        self.full = paging.size or 0
        # the last page number or offset there is, once a body has said (paging.total)
        self.last: int | None = None

    @property
    def concurrent(self) -> bool:
        return self.style in ("page", "offset")

    def first(self) -> Position:
        if self.style in ("page", "offset"):
            return self.paging.first
        if self.style in ("next", "link"):
            return self.start_url
        return ""

    def request(self, position: Position) -> tuple[str, dict[str, str], bool]:
        """The URL and query of ``position``, and whether it is the first page's, which
        carries the recipe's own parameters (a next URL carries them already)."""
        params: dict[str, str] = {}
        size = self.paging.size
        if self.style in ("next", "link"):
            url = str(position)
            first = url == self.start_url
            if first and size and self.paging.size_query:
                params[self.paging.size_query] = str(size)
            return url, params, first
        name = self.paging.query_param
        if self.style == "cursor" and position:
            params[str(name)] = str(position)
        elif self.style in ("page", "offset") and name:
            params[name] = str(position)
        if size and self.paging.size_query:
            params[self.paging.size_query] = str(size)
        return self.start_url, params, True

    def after(
        self, position: Position, body: Any, links: Mapping[str, Mapping[str, str]], count: int
    ) -> Position:
        """The position after ``position``'s page, which held ``count`` records; None when it
        was the last."""
        self.full = max(self.full, count)
        if self.paging.total and isinstance(total := apipath.first(body, self.paging.total), int):
            # page n of total pages, or offsets below total records
            self.last = total if self.style == "page" else total - 1
        if self.style == "none" or count == 0:
            return None
        if self.style == "cursor":
            cursor = apipath.first(body, self.paging.next_path or "")
            return str(cursor) if cursor not in (None, "") else None
        if self.style == "next":
            nxt = apipath.first(body, self.paging.next_path or "")
            return urljoin(str(position), str(nxt)) if isinstance(nxt, str) and nxt else None
        if self.style == "link":
            nxt = links.get("next", {}).get("url")
            return urljoin(str(position), nxt) if nxt else None
        if count < self.full:  # a short page is the last
            return None
        return self.ahead(position)

    def ahead(self, position: Position) -> Position:
        """The page after ``position`` before its answer comes, None past the total: page
        and offset paging only, once a full page's size is known."""
        assert isinstance(position, int)
        nxt = position + 1 if self.style == "page" else position + self.full
        return None if self.last is not None and nxt > self.last else nxt
