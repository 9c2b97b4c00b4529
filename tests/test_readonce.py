"""A page's links and field values are read once per response, never carried to another."""

from __future__ import annotations

from scrapy.http import HtmlResponse, Request
from scrapy.linkextractors import LinkExtractor

from spiders import readonce

LISTING = b"""<html><body>
<nav><a href="/page/2">next</a></nav>
<ul><li><a href="/a/1">one</a></li><li><a href="/a/2">two</a></li><li><a href="/x">x</a></li></ul>
<h1> Title </h1><p class="body">  </p><p class="body">text</p>
</body></html>"""


def page(body: bytes, url: str = "http://site.test/page/1") -> HtmlResponse:
    return HtmlResponse(url, body=body, encoding="utf-8", request=Request(url))


def test_links_are_the_extractors_and_values_are_stripped_and_not_blank() -> None:
    response = page(LISTING)
    expected = LinkExtractor(allow=r"/a/\d+").extract_links(response)
    assert readonce.links(response, r"/a/\d+", None) == expected
    assert [x.url for x in readonce.links(response, r"/page/", "nav")] == [
        "http://site.test/page/2"
    ]
    assert readonce.links(response, r"/a/", "nav") == []  # restricted to the nav
    assert readonce.values(response, "h1::text", None) == ["Title"]
    assert readonce.values(response, None, "//p[@class='body']/text()") == ["text"]


def test_a_second_read_of_a_response_is_the_first_and_another_response_is_read_anew() -> None:
    first = page(LISTING)
    values = readonce.values(first, "h1::text", None)
    values.append("changed by a caller")
    assert readonce.values(first, "h1::text", None) == ["Title"]
    assert readonce.links(first, r"/a/\d+", None) is readonce.links(first, r"/a/\d+", None)
    # a retried request's answer, at the same URL, is a new page
    again = page(LISTING.replace(b"/a/2", b"/a/3").replace(b" Title ", b"Other"))
    assert [x.url for x in readonce.links(again, r"/a/\d+", None)] == [
        "http://site.test/a/1",
        "http://site.test/a/3",
    ]
    assert readonce.values(again, "h1::text", None) == ["Other"]
