"""Serves a generated Site over HTTP on loopback, in a background thread.

The same articles are served in three sections: ``/`` as plain HTML, ``/js/`` where the
article content is loaded by JavaScript from a JSON endpoint (only a browser sees it), and
``/guarded/`` which bans a client address that asks too often (see ``Guard``).
``/hostile/`` serves a page that never finishes, a gzip bomb, a wrong encoding, broken
HTML and a binary body where an article was expected. ``/api/v1/`` serves the articles as
JSON records behind a token (``harvest.demosite.api``).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import random
import re
import sys
import threading
import time
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harvest.demosite.api import PREFIX as API_PREFIX
from harvest.demosite.api import DemoApi
from harvest.demosite.generator import Article, Site
from harvest.demosite.guard import Guard

SECTIONS = ("", "/js", "/guarded", "/hostile")
# a listing page's pagination: "chain" links only the previous and next page, so each is
# found only once the one before it was fetched; "numbered" also links the first, the last
# and PAGE_WINDOW pages either side, so a crawl finds them many at a time
PAGINATIONS = ("chain", "numbered")
PAGE_WINDOW = 5
# /hostile/: pages that break naive crawlers, each linked from /hostile/
HOSTILE = ("ok", "slow", "bomb", "latin1", "broken", "binary")
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - Harvest Daily</title></head>
<body><header><a href="/">Harvest Daily</a></header>
<main>{main}</main></body></html>"""
JS_LOADER = """<script>
fetch({api}).then(r => r.json()).then(a => {{
  const el = (tag, cls, text) => {{ const e = document.createElement(tag);
    if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }};
  const art = document.querySelector("article");
  art.appendChild(el("h1", "title", a.title));
  const by = el("p", "byline"); by.append("By ", el("span", "author", a.author), " on ");
  const t = el("time", null, a.published); t.setAttribute("datetime", a.published);
  by.append(t); art.appendChild(by);
  const body = el("div", "body"); a.paragraphs.forEach(p => body.appendChild(el("p", null, p)));
  art.appendChild(body);
  const tags = el("ul", "tags"); a.tags.forEach(x => tags.appendChild(el("li", null, x)));
  art.appendChild(tags); document.body.setAttribute("data-loaded", "1");
}});
</script>"""


def render_listing(site: Site, page: int, prefix: str = "", pagination: str = "chain") -> str:
    items = "".join(
        f'<li><a class="article-link" href="{prefix}{a.path}">{escape(a.title)}</a></li>'
        for a in site.listing(page)
    )

    def href(n: int) -> str:
        return f"{prefix}/" if n == 1 else f"{prefix}/page/{n}"

    nav = ""
    if page > 1:
        nav += f'<a class="prev" href="{href(page - 1)}">Previous</a> '
    if pagination == "numbered":
        nav += (
            " ".join(
                f'<span class="current">{n}</span>' if n == page else f'<a href="{href(n)}">{n}</a>'
                for n in numbered_pages(page, site.pages)
            )
            + " "
        )
    if page < site.pages:
        nav += f'<a class="next" href="{prefix}/page/{page + 1}">Next</a>'
    main = f'<h1>Latest news, page {page} of {site.pages}</h1><ul class="articles">{items}</ul>'
    return PAGE.format(title=f"Page {page}", main=main + f'<nav class="pagination">{nav}</nav>')


def numbered_pages(page: int, pages: int, window: int = PAGE_WINDOW) -> list[int]:
    """The numbers a listing page links to: the first, the last, and ``window`` either side
    of its own, as most sites' pagination shows them."""
    near = range(max(1, page - window), min(pages, page + window) + 1)
    return sorted({1, pages, *near})


def render_article(article: Article) -> str:
    paragraphs = "".join(f"<p>{escape(p)}</p>" for p in article.paragraphs)
    tags = "".join(f"<li>{escape(t)}</li>" for t in article.tags)
    main = (
        f'<article><h1 class="title">{escape(article.title)}</h1>'
        f'<p class="byline">By <span class="author">{escape(article.author)}</span> on '
        f'<time datetime="{escape(article.published)}">{escape(article.published)}</time></p>'
        f'<div class="body">{paragraphs}</div><ul class="tags">{tags}</ul></article>'
    )
    return PAGE.format(title=escape(article.title), main=main)


def render_js_article(article: Article) -> str:
    """An empty shell; the script fills in the same markup as ``render_article``."""
    api = json.dumps(f"/js/api/{article.slug}.json")
    return PAGE.format(title="Loading", main="<article></article>" + JS_LOADER.format(api=api))


def article_json(article: Article) -> str:
    return json.dumps(
        {
            "title": article.title,
            "paragraphs": article.paragraphs,
            "author": article.author,
            "published": article.published,
            "tags": article.tags,
        }
    )


class _Server(ThreadingHTTPServer):
    # a real server's listen backlog (nginx's is 511): socketserver's 5 drops the SYNs of a
    # crawler's first burst, whose requests then arrive a second late, when the client
    # sends them again, and look like requests made in spite of a Retry-After
    request_queue_size = 128
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hung up mid-answer (a crawl cancelling what it asked ahead for)
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class DemoSite:
    """``with DemoSite(site, port=0) as demo: demo.url``"""

    def __init__(
        self,
        site: Site,
        host: str = "127.0.0.1",
        port: int = 0,
        guard: Guard | None = None,
        etags: bool = True,
        latency: tuple[float, float] = (0.0, 0.0),
        pagination: str = "chain",
        api: DemoApi | None = None,
    ):
        """``latency``: each answer waits a time drawn uniformly from this range (seconds),
        as a site across a network does, so that crawlers are measured waiting on it.
        ``pagination``: how listing pages link each other, one of ``PAGINATIONS``."""
        if pagination not in PAGINATIONS:
            raise ValueError(f"pagination {pagination!r}: one of {', '.join(PAGINATIONS)}")
        self.site = site
        self.guard = guard or Guard()
        self.api = api or DemoApi(site)
        # every (client address, path) requested, in order: lets tests see what was fetched
        self.requests: list[tuple[str, str]] = []
        # path -> how many more times it answers 500 (-1: always): a page that keeps failing
        self.failing: dict[str, int] = {}
        attrs = {"site": site, "guard": self.guard, "log": self.requests, "etags": etags}
        attrs["failing"] = self.failing
        attrs["latency"] = latency
        attrs["pagination"] = pagination
        attrs["api"] = self.api
        handler = type("Handler", (_Handler,), attrs)
        self.httpd = _Server((host, port), handler)
        self.thread: threading.Thread | None = None

    def remove(self, slug: str) -> None:
        """Takes an article off the site, as if it were deleted."""
        article = self.site.by_slug.pop(slug)
        self.site.articles.remove(article)

    @property
    def hits(self) -> list[str]:
        return [path for _, path in self.requests]

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> DemoSite:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> DemoSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@functools.cache
def _bomb() -> bytes:
    """64 MiB of zeros, gzipped to about 64 KiB."""
    return gzip.compress(b"\0" * (64 << 20), compresslevel=9)


class _Handler(BaseHTTPRequestHandler):
    site: Site
    guard: Guard
    log: list[tuple[str, str]]
    failing: dict[str, int]
    slow_seconds: float = 60.0
    set_cookie: str | None = None  # a session for a client of a guard that limits by cookie
    etags: bool = True
    latency: tuple[float, float] = (0.0, 0.0)
    pagination: str = "chain"
    api: DemoApi
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes; with Nagle's algorithm each response would
    # wait for the client's delayed ACK, capping the site near 300 requests/s
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path, _, query = self.path.partition("?")
        self.log.append((self.client_address[0], path))
        if self.latency[1] > 0:
            time.sleep(random.uniform(*self.latency))
        if self.failing.get(path, 0):
            self.failing[path] -= self.failing[path] > 0
            return self._send(500, "Internal Server Error", "text/plain")
        if path.startswith(API_PREFIX + "/"):
            return self.api.handle(self, path, query)
        if path == "/robots.txt":
            return self._send(200, "User-agent: *\nAllow: /\n", "text/plain")
        prefix = next((p for p in SECTIONS[1:] if path == p or path.startswith(p + "/")), "")
        rest = path[len(prefix) :] or "/"
        if prefix == "/guarded":
            # a new client's first request already counts against the session it is given
            cookie = self.set_cookie = self.guard.set_cookie(self.headers.get("Cookie"))
            blocked = self.guard.check(
                self.client_address[0], rest, cookie or self.headers.get("Cookie")
            )
            if blocked:
                status, headers, body = blocked
                return self._send(status, body, headers=headers)
        if prefix == "/hostile":
            return self._hostile(rest)
        if prefix == "/js" and (m := re.fullmatch(r"/api/([\w\-]+)\.json", rest)):
            article = self.site.by_slug.get(m.group(1))
            if article is not None:
                return self._send(200, article_json(article), "application/json")
        if rest == "/":
            return self._send(200, render_listing(self.site, 1, prefix, self.pagination))
        if m := re.fullmatch(r"/page/(\d+)", rest):
            page = int(m.group(1))
            if 1 <= page <= self.site.pages:
                return self._send(200, render_listing(self.site, page, prefix, self.pagination))
        if m := re.fullmatch(r"/article/([\w\-]+)", rest):
            article = self.site.by_slug.get(m.group(1))
            if article is not None:
                page_html = (
                    render_js_article(article) if prefix == "/js" else render_article(article)
                )
                if not self.etags:
                    return self._send(200, page_html)
                # article pages answer conditional requests, as most real sites do
                etag = '"' + hashlib.sha1(page_html.encode()).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    return self._send_bytes(304, b"", "text/html", {"ETag": etag})
                return self._send(200, page_html, headers={"ETag": etag})
        return self._send(404, PAGE.format(title="Not found", main="<h1>Not found</h1>"))

    def _hostile(self, rest: str) -> None:
        article = next(a for a in self.site.articles if not a.planted)
        name = rest.strip("/")
        if name == "":
            links = "".join(f'<li><a href="/hostile/{n}">{n}</a></li>' for n in HOSTILE)
            return self._send(200, PAGE.format(title="Hostile", main=f"<ul>{links}</ul>"))
        if name == "ok":
            return self._send(200, render_article(article))
        if name == "slow":
            time.sleep(self.slow_seconds)
            return self._send(200, render_article(article))
        if name == "bomb":
            return self._send_bytes(200, _bomb(), "text/html", {"Content-Encoding": "gzip"})
        if name == "latin1":
            html = render_article(article).replace('<h1 class="title">', '<h1 class="title">Café ')
            return self._send_bytes(
                200, html.encode("latin-1", "replace"), "text/html; charset=utf-8"
            )
        if name == "broken":
            return self._send(200, render_article(article)[:300])
        if name == "binary":
            return self._send_bytes(200, bytes(range(256)) * 64, "application/octet-stream")
        return self._send(404, PAGE.format(title="Not found", main="<h1>Not found</h1>"))

    def _send(
        self,
        status: int,
        body: str,
        ctype: str = "text/html",
        headers: dict[str, str] | None = None,
    ) -> None:
        self._send_bytes(status, body.encode("utf-8"), f"{ctype}; charset=utf-8", headers)

    def _send_bytes(
        self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.set_cookie:
            self.send_header("Set-Cookie", self.set_cookie)
            self.set_cookie = None
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass
