"""The demo site's JSON API, ``/api/v1/``: the site's articles as records, behind a token.

One collection, paged five ways, so that each paging style a recipe can name has a real
server to crawl:

- ``/api/v1/articles``: a cursor in the body (``next_cursor``), ``?cursor=&limit=``
- ``/api/v1/paged/articles``: ``?page=&per_page=``, with ``total_pages``
- ``/api/v1/offset/articles``: ``?offset=&limit=``, with ``total``
- ``/api/v1/next/articles``: a ``next`` URL in the body, ``?after=<id>&limit=``
- ``/api/v1/linked/articles``: ``?page=&per_page=``, the next page in the ``Link`` header
- ``/api/v1/articles/<id>``: one record (each record's URL)

Every list takes ``since`` (only records updated after it) and answers ``If-None-Match``.
Credentials: ``Authorization: Bearer <token>``, an ``X-API-Key`` header, ``?api_key=`` or
basic auth with any user and the token as password; none or a wrong one is a 401. Like a
real API it has a rate limit (a ``Guard``: 429 with ``Retry-After``), answers a share of
requests with a 500, and is slow on the page that holds record ``slow_at``. The next URLs
it gives echo the request's parameters, ``api_key`` included, as many real APIs do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from harvest.demosite.generator import Site
from harvest.demosite.guard import Guard

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

PREFIX = "/api/v1"
STYLES = {
    "/articles": "cursor",
    "/paged/articles": "page",
    "/offset/articles": "offset",
    "/next/articles": "next",
    "/linked/articles": "link",
}
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# credentials never echoed in a next URL a crawler might log: none; the API echoes all
AUTH_PARAM = "api_key"


@dataclass
class DemoApi:
    """The API's records and behaviour; ``add`` and ``touch`` change them between crawls."""

    site: Site
    token: str = "demo-token"
    guard: Guard | None = None  # the rate limit; None: no limit
    fail_rate: float = 0.0  # share of requests answered 500
    slow_at: int | None = None  # the page holding this record index is slow
    slow_seconds: float = 1.0
    seed: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    # (style, query without credentials, status) of every list request, in order
    log: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.clock = 0  # minutes past EPOCH of the last update
        if not self.records:
            self.add(len(self.site.articles))

    def add(self, n: int) -> list[dict[str, Any]]:
        """``n`` new records, updated after every record so far."""
        with self.lock:
            new = []
            for _ in range(n):
                i = len(self.records)
                article = self.site.articles[i % len(self.site.articles)]
                self.clock += 1
                record = {
                    "id": i + 1,
                    "slug": article.slug,
                    "title": article.title,
                    "body": "\n\n".join(article.paragraphs),
                    "author": {"name": article.author},
                    "published": article.published,
                    "tags": list(article.tags),
                    "updated_at": _stamp(self.clock),
                }
                self.records.append(record)
                new.append(record)
            return new

    def touch(self, record_id: int) -> None:
        """Updates a record now: it moves past every other one."""
        with self.lock:
            record = next(r for r in self.records if r["id"] == record_id)
            self.records.remove(record)
            self.clock += 1
            record["updated_at"] = _stamp(self.clock)
            self.records.append(record)

    def handle(self, handler: BaseHTTPRequestHandler, path: str, query: str) -> None:
        params = dict(parse_qsl(query, keep_blank_values=True))
        rest = path[len(PREFIX) :]
        style = STYLES.get(rest)
        shown = urlencode({k: v for k, v in params.items() if k != AUTH_PARAM})
        status, body, headers = self._answer(handler, rest, style, params)
        with self.lock:
            self.log.append((style or rest, shown, status))
        data = b"" if status == 304 else json.dumps(body).encode()
        send = handler._send_bytes  # type: ignore[attr-defined]
        send(status, data, "application/json", headers)

    def _answer(
        self, handler: BaseHTTPRequestHandler, rest: str, style: str | None, params: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        if not self._authorised(handler, params):
            which = "invalid credentials" if self._offered(handler, params) else "no credentials"
            return 401, {"error": which}, {"WWW-Authenticate": 'Bearer realm="demo"'}
        if self.guard is not None:
            blocked = self.guard.check(handler.client_address[0], rest)
            if blocked is not None:
                return blocked[0], {"error": "too many requests"}, blocked[1]
        with self.lock:
            failed = self.rng.random() < self.fail_rate
        if failed:
            return 500, {"error": "internal error"}, {}
        if rest.startswith("/articles/") and rest[len("/articles/") :].isdigit():
            wanted = int(rest[len("/articles/") :])
            found = next((r for r in self.records if r["id"] == wanted), None)
            return (200, found, {}) if found else (404, {"error": "no such record"}, {})
        if style is None:
            return 404, {"error": "not found"}, {}
        try:
            return self._page(handler, rest, style, params)
        except ValueError as exc:
            return 400, {"error": str(exc)}, {}

    def _page(
        self, handler: BaseHTTPRequestHandler, rest: str, style: str, params: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            since = params.get("since")
            rows = [r for r in self.records if since is None or r["updated_at"] > since]
            version = len(self.records), self.clock
        size = _int(params.get("per_page" if style in ("page", "link") else "limit"), DEFAULT_LIMIT)
        size = min(max(size, 1), MAX_LIMIT)
        if style == "cursor":
            start = _uncursor(params.get("cursor"))
        elif style in ("page", "link"):
            start = (max(_int(params.get("page"), 1), 1) - 1) * size
        elif style == "offset":
            start = max(_int(params.get("offset"), 0), 0)
        else:
            after = _int(params.get("after"), 0)
            ids = [r["id"] for r in rows]
            start = ids.index(after) + 1 if after in ids else 0
        page = rows[start : start + size]
        more = start + size < len(rows)
        tag = hashlib.sha1(repr((version, rest, sorted(params.items()))).encode()).hexdigest()
        etag = f'"{tag[:16]}"'
        if handler.headers.get("If-None-Match") == etag:
            return 304, None, {"ETag": etag}
        if self.slow_at is not None and start <= self.slow_at < start + size:
            time.sleep(self.slow_seconds)
        headers = {"ETag": etag}
        body: dict[str, Any] = {"data": page}
        base = f"http://{handler.headers.get('Host', '127.0.0.1')}{PREFIX}{rest}"
        if style == "cursor":
            body["next_cursor"] = _cursor(start + size) if more else None
        elif style == "page":
            body["page"], body["total_pages"] = start // size + 1, -(-len(rows) // size)
        elif style == "offset":
            body["total"] = len(rows)
        elif style == "next":
            body["next"] = (
                f"{base}?{urlencode({**params, 'after': page[-1]['id']})}" if more else None
            )
        elif more:
            nxt = urlencode({**params, "page": start // size + 2, "per_page": size})
            headers["Link"] = f'<{base}?{nxt}>; rel="next"'
        return 200, body, headers

    def _authorised(self, handler: BaseHTTPRequestHandler, params: dict[str, str]) -> bool:
        return self.token in self._credentials(handler, params)

    def _offered(self, handler: BaseHTTPRequestHandler, params: dict[str, str]) -> bool:
        return bool(self._credentials(handler, params))

    def _credentials(self, handler: BaseHTTPRequestHandler, params: dict[str, str]) -> list[str]:
        found = []
        auth = handler.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            found.append(value.strip())
        elif scheme.lower() == "basic":
            try:
                found.append(base64.b64decode(value).decode().partition(":")[2])
            except (binascii.Error, UnicodeDecodeError):
                found.append("?")
        if key := handler.headers.get("X-API-Key"):
            found.append(key)
        if AUTH_PARAM in params:
            found.append(params[AUTH_PARAM])
        return found


def _stamp(minutes: int) -> str:
    return (EPOCH + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"not a whole number: {value!r}") from None


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _uncursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return max(int(text.removeprefix("o:")), 0)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError(f"not a cursor of this API: {cursor!r}") from None
