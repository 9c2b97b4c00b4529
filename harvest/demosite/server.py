"""Serves a generated Site over HTTP on loopback, in a background thread."""

from __future__ import annotations

import re
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harvest.demosite.generator import Article, Site

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - Harvest Daily</title></head>
<body><header><a href="/">Harvest Daily</a></header>
<main>{main}</main></body></html>"""


def render_listing(site: Site, page: int) -> str:
    items = "".join(
        f'<li><a class="article-link" href="{a.path}">{escape(a.title)}</a></li>'
        for a in site.listing(page)
    )
    nav = ""
    if page > 1:
        prev = "/" if page == 2 else f"/page/{page - 1}"
        nav += f'<a class="prev" href="{prev}">Previous</a> '
    if page < site.pages:
        nav += f'<a class="next" href="/page/{page + 1}">Next</a>'
    main = f'<h1>Latest news, page {page} of {site.pages}</h1><ul class="articles">{items}</ul>'
    return PAGE.format(title=f"Page {page}", main=main + f'<nav class="pagination">{nav}</nav>')


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


class DemoSite:
    """``with DemoSite(site, port=0) as demo: demo.url``"""

    def __init__(self, site: Site, host: str = "127.0.0.1", port: int = 0):
        self.site = site
        # every path requested, in order: lets tests see what a crawler fetched
        self.hits: list[str] = []
        handler = type("Handler", (_Handler,), {"site": site, "hits": self.hits})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

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


class _Handler(BaseHTTPRequestHandler):
    site: Site
    hits: list[str]
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        self.hits.append(path)
        if path == "/robots.txt":
            return self._send(200, "User-agent: *\nAllow: /\n", "text/plain")
        if path == "/":
            return self._send(200, render_listing(self.site, 1))
        if m := re.fullmatch(r"/page/(\d+)", path):
            page = int(m.group(1))
            if 1 <= page <= self.site.pages:
                return self._send(200, render_listing(self.site, page))
        if m := re.fullmatch(r"/article/([\w\-]+)", path):
            article = self.site.by_slug.get(m.group(1))
            if article is not None:
                return self._send(200, render_article(article))
        return self._send(404, PAGE.format(title="Not found", main="<h1>Not found</h1>"))

    def _send(self, status: int, body: str, ctype: str = "text/html") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass
