"""Refuses requests, redirects included, to private, loopback and link-local addresses.

A crawler that follows links and redirects from the open web must not be steered into the
network it runs in. Recipes for local sites (the demo, tests) say ``allow_private: true``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.httpobj import urlparse_cached

logger = logging.getLogger(__name__)


def is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return bool(
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


class PrivateAddressMiddleware:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.allow_setting = crawler.settings.getbool("HARVEST_ALLOW_PRIVATE")
        self.cache: dict[str, bool] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PrivateAddressMiddleware:
        return cls(crawler)

    def allowed(self) -> bool:
        recipe = getattr(self.crawler.spider, "recipe", None)
        return self.allow_setting or bool(recipe is not None and recipe.allow_private)

    def private(self, host: str) -> bool:
        if host not in self.cache:
            try:
                addresses = [host] if _is_ip(host) else _resolve(host)
            except OSError:
                addresses = []  # unresolvable: the download fails and is counted there
            self.cache[host] = any(is_private(a) for a in addresses)
        return self.cache[host]

    def process_request(self, request: Request, spider: Spider | None = None) -> Any:
        host = urlparse_cached(request).hostname or ""
        if not host or self.allowed() or not self.private(host):
            return None
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("harvest/refused/private_address")
        logger.warning("refused %s: %s is a private address", request.url, host)
        raise IgnoreRequest(f"{host} is a private address (set allow_private in the recipe)")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _resolve(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None)]
