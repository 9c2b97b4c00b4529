"""A frontier in Redis that several crawl processes share: one queue, one seen-filter.

Keys live under ``<HARVEST_REDIS_PREFIX>:<source>:<crawl id>:``:

- ``queue``: a list of serialized requests, pushed on the left and popped on the right;
- ``seen``: the set of fingerprints of every request ever queued;
- ``busy``: the workers holding requests they popped but have not finished;
- ``done``: set when the crawl ended, so a worker that starts late does not crawl again.

Each step runs as one Lua script, so the crawl ends exactly when the queue is empty and
no worker is busy: a popped request marks its worker busy in the same step, and a worker
leaves ``busy`` only when its engine is idle, that is after the requests its pages led to
are queued. The step that sees the end deletes the queue, the filter and ``busy``.

A worker takes a request only when it can send it about now: past
``HARVEST_REDIS_PREFETCH`` requests waiting in its download slots it leaves the rest in
the shared queue, where an idle worker takes them, instead of holding them behind its own
per-site concurrency. Requests another worker queued do not wake an idle engine, so every
``WAKE_INTERVAL`` a worker with room looks at the shared queue again, which is also how an
idle worker sees the end of the crawl within that time.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from scrapy import Request, Spider, signals
from scrapy.core.scheduler import BaseScheduler
from scrapy.crawler import Crawler
from scrapy.exceptions import DontCloseSpider
from scrapy.utils.request import request_from_dict
from twisted.internet import task

logger = logging.getLogger(__name__)

KEYS = ("queue", "seen", "busy", "done")
# seconds between looks at the shared queue while this worker has room: a small fraction
# of a page's round trip, so a page queued by another worker (the next listing page of a
# chain) waits little for an idle one
WAKE_INTERVAL = 0.02

# KEYS: queue seen done; ARGV: fingerprint ("" for dont_filter), request
_ENQUEUE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
if ARGV[1] ~= '' and redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[2])
return 1
"""
# KEYS: queue busy; ARGV: worker
_POP = """
local data = redis.call('RPOP', KEYS[1])
if data then redis.call('SADD', KEYS[2], ARGV[1]) end
return data
"""
# KEYS: queue seen busy done; ARGV: worker, seconds the end marker lives
_IDLE = """
if redis.call('EXISTS', KEYS[4]) == 1 then return 1 end
redis.call('SREM', KEYS[3], ARGV[1])
if redis.call('LLEN', KEYS[1]) > 0 or redis.call('SCARD', KEYS[3]) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SET', KEYS[4], '1', 'EX', ARGV[2])
return 1
"""


def frontier_keys(prefix: str, source: str, crawl_id: str) -> dict[str, str]:
    return {name: f"{prefix}:{source}:{crawl_id}:{name}" for name in KEYS}


def redact(url: str) -> str:
    """``url`` with any password (``user:pw@`` or ``?password=``) replaced, fit for messages."""
    parts = urlsplit(url)
    if parts.password is None and "password=" not in parts.query:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def connect(url: str, timeout: float = 5.0) -> redis.Redis:
    """A client for ``url`` that answered a ping; ConnectionError names the redacted URL."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        message = str(exc)
        password = client.connection_pool.connection_kwargs.get("password")
        if password:
            message = message.replace(str(password), "***")
        raise ConnectionError(f"cannot reach Redis at {redact(url)}: {message}") from exc
    return client


class RedisFrontier(BaseScheduler):
    """A scheduler whose queue and duplicate filter are in Redis, shared by every worker.

    Needs ``HARVEST_REDIS_URL`` and the workers' shared ``HARVEST_CRAWL_ID``, which
    ``harvest crawl --workers N`` sets. Requests are served first in, first out; their
    priority is not kept.
    """

    def __init__(self, crawler: Crawler, client: redis.Redis):
        settings = crawler.settings
        self.crawler = crawler
        self.client = client
        self.prefix = settings.get("HARVEST_REDIS_PREFIX")
        self.done_ttl = settings.getint("HARVEST_REDIS_DONE_TTL")
        self.prefetch = settings.getint("HARVEST_REDIS_PREFETCH")
        default_worker = f"{socket.gethostname()}:{os.getpid()}"
        self.worker = settings.get("HARVEST_REDIS_WORKER") or default_worker
        self.crawl_id = settings.get("HARVEST_CRAWL_ID")
        if not self.crawl_id:
            raise ValueError("a shared frontier needs HARVEST_CRAWL_ID, the same in every worker")
        self.enqueue_script = client.register_script(_ENQUEUE)
        self.pop_script = client.register_script(_POP)
        self.idle_script = client.register_script(_IDLE)
        self.keys: dict[str, str] = {}
        self.spider: Spider | None = None
        self.waker = task.LoopingCall(self.wake)
        # requests this worker's pages led to, sent to Redis together at the end of the
        # reactor's turn: one round trip for a listing page's links instead of one each
        self.outbox: list[tuple[str, bytes]] = []
        self.flush_call: Any = None
        self.last_look = 0.0  # time.monotonic() of this worker's last look at the queue

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RedisFrontier:
        url = crawler.settings.get("HARVEST_REDIS_URL")
        if not url:
            raise ValueError("a shared frontier needs HARVEST_REDIS_URL")
        frontier = cls(crawler, connect(url))
        crawler.signals.connect(frontier.spider_idle, signal=signals.spider_idle)
        return frontier

    def open(self, spider: Spider) -> None:
        self.spider = spider
        recipe = getattr(spider, "recipe", None)
        source = recipe.name if recipe else spider.name
        self.keys = frontier_keys(self.prefix, source, self.crawl_id)
        self.waker.start(WAKE_INTERVAL, now=False)
        if self.client.exists(self.keys["done"]):
            logger.warning("crawl %s of %s already ended; nothing to do", self.crawl_id, source)

    def wake(self) -> None:
        """Requests other workers queued do not wake this engine, which would otherwise look
        again only on its 5 s heartbeat, and neither does the end of the crawl: while this
        worker has room and its engine has not looked lately (its answers make it look),
        nudge it to take a request, or when it is idle to see whether the crawl is over."""
        self.flush()
        engine = self.crawler.engine
        slot = getattr(engine, "_slot", None)
        if slot is None or engine is None or engine.needs_backout():
            return
        if self.waiting() >= self.prefetch or time.monotonic() - self.last_look < WAKE_INTERVAL:
            return
        if not engine.downloader.active or self.client.llen(self.keys["queue"]):
            slot.nextcall.schedule()

    def waiting(self) -> int:
        """Requests this worker took that wait in its download slots for a free transfer."""
        engine = self.crawler.engine
        if engine is None:
            return 0
        return sum(len(slot.queue) for slot in engine.downloader.slots.values())

    def close(self, reason: str) -> None:
        if self.waker.running:
            self.waker.stop()
        self.flush()
        # a worker stopped by a signal stays busy, so the others cannot end the crawl without
        # the requests it held; any other end (a CLOSESPIDER_* limit) lets them finish
        if reason != "shutdown" and self.keys:
            self.client.srem(self.keys["busy"], self.worker)
        self.client.close()

    def has_pending_requests(self) -> bool:
        self.flush()
        return bool(self.client.llen(self.keys["queue"]))

    def enqueue_request(self, request: Request) -> bool:
        """Queued at the end of this turn of the reactor, with the others queued in it; a
        duplicate is counted then, and the engine is not told of it."""
        fingerprint = "" if request.dont_filter else self.fingerprint(request)
        data = pickle.dumps(request.to_dict(spider=self.spider), protocol=pickle.HIGHEST_PROTOCOL)
        self.outbox.append((fingerprint, data))
        if self.flush_call is None:
            self.flush_call = cast(Any, self.waker.clock).callLater(0, self.flush)
        return True

    def flush(self) -> None:
        """Sends the requests queued since the last flush, in one pipeline."""
        if self.flush_call is not None:
            if self.flush_call.active():
                self.flush_call.cancel()
            self.flush_call = None
        if not self.outbox:
            return
        outbox, self.outbox = self.outbox, []
        keys = [self.keys["queue"], self.keys["seen"], self.keys["done"]]
        pipe = self.client.pipeline(transaction=False)
        for fingerprint, data in outbox:
            self.enqueue_script(keys=keys, args=[fingerprint, data], client=pipe)
        stats = self.crawler.stats
        assert stats is not None
        for added in pipe.execute():
            if added == 1:
                stats.inc_value("scheduler/enqueued/redis")
                stats.inc_value("scheduler/enqueued")
            elif added == 0:
                stats.inc_value("dupefilter/filtered")

    def next_request(self) -> Request | None:
        if self.waiting() >= self.prefetch:
            return None  # left for a worker that can send it now; wake() asks again
        self.flush()
        self.last_look = time.monotonic()
        data = self.pop_script(keys=[self.keys["queue"], self.keys["busy"]], args=[self.worker])
        if data is None:
            return None
        stats = self.crawler.stats
        assert stats is not None
        stats.inc_value("scheduler/dequeued/redis")
        stats.inc_value("scheduler/dequeued")
        return request_from_dict(pickle.loads(cast(bytes, data)), spider=self.spider)

    def fingerprint(self, request: Request) -> str:
        assert self.crawler.request_fingerprinter is not None
        return self.crawler.request_fingerprinter.fingerprint(request).hex()

    def spider_idle(self, spider: Spider) -> None:
        """This worker has nothing in flight: close only when no other worker has either."""
        self.flush()
        k = self.keys
        ended = self.idle_script(
            keys=[k["queue"], k["seen"], k["busy"], k["done"]], args=[self.worker, self.done_ttl]
        )
        if not ended:
            raise DontCloseSpider


def delete_frontier(client: redis.Redis, prefix: str, source: str, crawl_id: str) -> Any:
    """Removes every key of a crawl's frontier, its end marker too."""
    return client.delete(*frontier_keys(prefix, source, crawl_id).values())
