"""The demo site's rate limiter for ``/guarded/``: one family of limit regimes, with parameters.

Real sites limit in several ways, and a crawler must cope with each without being told which:

- ``window``: at most ``limit`` requests in any ``window`` seconds (a sliding log); past it,
  429 with ``Retry-After`` until the oldest request leaves the window.
- ``fixed``: ``limit`` requests per fixed ``window`` (counters reset at multiples of it);
  past it, 429 with ``Retry-After`` until the next window starts.
- ``bucket``: a token bucket of ``limit`` tokens refilled at ``limit / window`` a second;
  past it, 429 with ``Retry-After`` until a token is back.

With ``ban_seconds > 0`` a client past its limit is blocked for that long, whatever it
does meanwhile (nginx ``limit_req`` with a burst, WAF rate rules with a block time):
``ban_status`` 403 answers a block page with a captcha marker, 429 a bare "Too many
requests" with no ``Retry-After``, and 200 a soft block (a page that looks like any other;
recognising it is the page checks' job, not the pace's).

``listing_limit`` gives listing pages a limit of their own, apart from item pages.
``key="cookie"`` limits per session cookie (``Guard.COOKIE``, set on the first answer to a
client without one) instead of per client address; a client without the cookie is counted
by its address.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - Harvest Daily</title></head>
<body><header><a href="/">Harvest Daily</a></header>
<main>{main}</main></body></html>"""
BLOCK_PAGE = PAGE.format(
    title="Access denied",
    main='<h1>Access denied</h1><div class="captcha">Prove you are human to continue.</div>',
)
# a soft block: status 200 and the site's own frame, but none of the page's content
SOFT_BLOCK_PAGE = PAGE.format(
    title="Latest news", main="<h1>Please wait</h1><p>We are checking your browser.</p>"
)
REGIMES = ("window", "fixed", "bucket")
Verdict = tuple[int, dict[str, str], str]


@dataclass
class Guard:
    """Limits each client (address or session) to ``limit`` requests a ``window`` seconds.

    The defaults ban for an hour with a 403 block page; ``ban_seconds == 0`` answers 429 with
    ``Retry-After`` until the client is under the limit again.
    """

    limit: int = 30
    window: float = 10.0
    ban_seconds: float = 3600.0
    regime: str = "window"
    ban_status: int = 403
    listing_limit: int | None = None
    key: str = "address"  # or "cookie"
    # per client key: the sliding log (window), [count, window start] (fixed), or
    # [tokens, last refill] (bucket)
    seen: dict[str, deque[float]] = field(default_factory=dict)
    banned_until: dict[str, float] = field(default_factory=dict)
    # (time.monotonic(), client address, status) of every guarded request, in order
    answers: list[tuple[float, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    COOKIE = "harvest_session"

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise ValueError(f"regime {self.regime!r}: one of {', '.join(REGIMES)}")
        if self.ban_status not in (200, 403, 429):
            raise ValueError(f"ban_status {self.ban_status}: 200, 403 or 429")
        if self.key not in ("address", "cookie"):
            raise ValueError(f"key {self.key!r}: address or cookie")

    def check(self, address: str, path: str = "/", cookie: str | None = None) -> Verdict | None:
        """None to serve the page; else the status, headers and body to answer instead."""
        now = time.monotonic()
        listing = self.listing_limit is not None and "/article/" not in path
        client = self.session(cookie) if self.key == "cookie" else None
        key = f"{client or address}{'|listing' if listing else ''}"
        limit = self.listing_limit if listing and self.listing_limit else self.limit
        with self.lock:
            verdict = self._check(key, limit, now)
            self.answers.append((now, address, verdict[0] if verdict else 200))
            return verdict

    def session(self, cookie: str | None) -> str | None:
        """The session named by a request's ``Cookie`` header, if any."""
        if not cookie:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie)
        except Exception:
            return None
        morsel = jar.get(self.COOKIE)
        return f"session:{morsel.value}" if morsel else None

    def set_cookie(self, cookie: str | None) -> str | None:
        """A ``Set-Cookie`` value for a client that has no session yet (cookie key only)."""
        if self.key != "cookie" or self.session(cookie) is not None:
            return None
        return f"{self.COOKIE}={secrets.token_hex(8)}; Path=/"

    def reset(self) -> None:
        with self.lock:
            self.seen.clear()
            self.banned_until.clear()
            self.answers.clear()

    def _check(self, key: str, limit: int, now: float) -> Verdict | None:
        if self.banned_until.get(key, 0.0) > now:
            return self._blocked()
        retry = self._over(key, limit, now)
        if retry is None:
            return None
        if self.ban_seconds > 0:
            self.banned_until[key] = now + self.ban_seconds
            return self._blocked()
        return 429, {"Retry-After": str(max(1, int(retry + 0.999)))}, "Too many requests"

    def _over(self, key: str, limit: int, now: float) -> float | None:
        """None if the request is within the limit (and counts it); else when to come back."""
        state = self.seen.setdefault(key, deque())
        if self.regime == "window":
            while state and state[0] <= now - self.window:
                state.popleft()
            if len(state) >= limit:
                return state[0] + self.window - now
            state.append(now)
            return None
        if not state:
            state.extend([0.0 if self.regime == "fixed" else float(limit), now])
        if self.regime == "fixed":
            start = now - now % self.window
            if state[1] != start:
                state[0], state[1] = 0.0, start
            if state[0] >= limit:
                return start + self.window - now
            state[0] += 1
            return None
        rate = limit / self.window
        state[0] = min(float(limit), state[0] + (now - state[1]) * rate)
        state[1] = now
        if state[0] < 1:
            return (1 - state[0]) / rate
        state[0] -= 1
        return None

    def _blocked(self) -> Verdict:
        if self.ban_status == 403:
            return 403, {}, BLOCK_PAGE
        if self.ban_status == 200:
            return 200, {}, SOFT_BLOCK_PAGE
        return 429, {}, "Too many requests"

    def minimum_seconds(self, requests: int, exits: int, listings: int = 0) -> float:
        """The least time ``requests`` can take through ``exits`` clients: each may send
        ``limit`` at once, then ``limit`` a ``window``. With a listing limit, the
        ``listings`` among them count against it instead, and the slower of the two sets
        the time."""

        def least(n: int, limit: int) -> float:
            per_window = limit * exits
            return max(0, n - per_window) / per_window * self.window

        if not self.listing_limit:
            return least(requests, self.limit)
        return max(least(requests - listings, self.limit), least(listings, self.listing_limit))
