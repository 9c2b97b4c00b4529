"""A page's links and field values, read once.

The suspect check (spiders/middlewares/suspect.py) reads every page for the links and
required fields its pattern has had, just before the spider reads the same page for the
same links and fields; each answer is kept with the response until it is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from scrapy.http import Response, TextResponse
from scrapy.link import Link
from scrapy.linkextractors import LinkExtractor

T = TypeVar("T")
_READ: WeakKeyDictionary[Response, dict[Hashable, Any]] = WeakKeyDictionary()


def _once(response: Response, key: Hashable, read: Callable[[], T]) -> T:
    done = _READ.get(response)
    if done is None:
        done = _READ[response] = {}
    if key not in done:
        done[key] = read()
    value: T = done[key]
    return value


@lru_cache(maxsize=256)
def _extractor(allow: str, restrict_css: str | None) -> LinkExtractor:
    return LinkExtractor(allow=allow, restrict_css=restrict_css or ())


def links(response: TextResponse, allow: str, restrict_css: str | None) -> list[Link]:
    """The links of ``response`` a follow rule takes."""
    return _once(
        response,
        ("links", allow, restrict_css),
        lambda: _extractor(allow, restrict_css).extract_links(response),
    )


def values(response: Response, css: str | None, xpath: str | None) -> list[str]:
    """A field's non-blank values on ``response``, stripped."""

    def read() -> list[str]:
        sel = response.css(css) if css else response.xpath(xpath or "")
        return [s for s in (s.strip() for s in sel.getall()) if s]

    return list(_once(response, ("values", css, xpath), read))
