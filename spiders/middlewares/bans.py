"""Ban detection: which responses and download errors mean "this proxy is blocked"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
)
from scrapy.http import Response, TextResponse
from twisted.internet import error
from twisted.web.client import ResponseNeverReceived

from spiders.recipe import BanPolicy

# failures to reach or talk to the proxy itself, not answers from the site
CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    DownloadFailedError,
    CannotResolveHostError,
    TunnelError,
    error.ConnectError,
    error.TimeoutError,
    error.ConnectionLost,
    ResponseNeverReceived,
    ConnectionRefusedError,
    TimeoutError,
)
# the proxy refused us (bad credentials): a proxy fault, not a ban by the site
PROXY_AUTH_REQUIRED = 407
# the flag spiders/middlewares/suspect.py puts on a 200 page it takes for a look-alike
SUSPECT_FLAG = "suspected block"


@dataclass(frozen=True)
class Ban:
    """Why a response was taken as a ban, and the least the site asked us to wait."""

    reason: str
    retry_after: float = 0.0


class BanDetector:
    """Built from a recipe's ``BanPolicy``: ban statuses, and body markers (regexes)."""

    def __init__(self, policy: BanPolicy):
        self.statuses = frozenset(policy.statuses)
        self.markers = [re.compile(m) for m in policy.markers]

    def check(self, response: Response) -> Ban | None:
        retry_after = parse_retry_after(response) if response.status in {429, 503} else 0.0
        if response.status in self.statuses:
            return Ban(f"status {response.status}", retry_after)
        if suspect := next((f for f in response.flags if f.startswith(SUSPECT_FLAG)), None):
            return Ban(suspect)
        if isinstance(response, TextResponse):
            for marker in self.markers:
                if marker.search(response.text):
                    return Ban(f"marker {marker.pattern!r}", retry_after)
        return None

    @staticmethod
    def is_connection_failure(exc: BaseException) -> bool:
        # a failure may say it was not the exit's doing (a render whose scripts ran slow)
        return isinstance(exc, CONNECTION_FAILURES) and getattr(exc, "exit_at_fault", True)


def parse_retry_after(response: Response, now: datetime | None = None) -> float:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date); 0 when absent or bad."""
    raw = response.headers.get(b"Retry-After")
    if not raw:
        return 0.0
    value = raw.decode("latin-1").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
