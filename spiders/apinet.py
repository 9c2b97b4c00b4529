"""An API crawl's httpx clients, made cheap per request.

An API answers a few hundred small pages a second, and at that rate the crawl is bound
by its own CPU, most of it in httpx's connection pool rather than in the crawl:

- httpcore reaches the network through anyio, which builds a mapping of a socket's
  attributes each time it is asked for one, and the pool asks every connection whether
  its socket is readable each time it hands out or takes back a connection.
  ``AsyncioBackend`` gives httpcore the same streams on asyncio directly.
- The pool looks over all its connections, some checks twice over, for every request:
  work that grows with the square of the connections. ``Clients`` spreads an exit's
  connections over a few clients of ``SHARD`` each, sharing one cookie jar.
- The client hands every response to its cookie jar through two adapter objects, even
  one that sets no cookie. ``AsyncClient``'s jar skips those.

httpx's API, HTTP/2, proxies and TLS are unchanged.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx


@contextmanager
def _mapped(timeout_error: type[Exception], other: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error(str(exc) or "timed out") from exc
    except (OSError, EOFError) as exc:  # ssl.SSLError and ConnectionError included
        raise other(str(exc) or type(exc).__name__) from exc


def _buffered(reader: asyncio.StreamReader) -> int:
    """Bytes the reader holds, read ahead off the socket: asyncio has no public length."""
    return len(getattr(reader, "_buffer", b""))


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader, self._writer = reader, writer
        self._poller: select.poll | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            if _buffered(self._reader) or self._reader.at_eof():
                return await self._reader.read(max_bytes)  # at once: no deadline to arm
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            if self._writer.is_closing():
                raise ConnectionResetError("the connection is closed")
            self._writer.write(buffer)
            if self._writer.transport.get_write_buffer_size():  # else drain has no wait
                async with asyncio.timeout(timeout):
                    await self._writer.drain()

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            try:
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
            except BaseException:
                self._writer.close()
                raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # asyncio reads ahead into the reader: what it holds counts as readable too
            return self._reader.at_eof() or _buffered(self._reader) > 0 or self._socket_readable()
        return None

    def _socket_readable(self) -> bool:
        """Whether the socket has something to read, or is closed: an idle keep-alive
        connection the server hung up, which the pool must not hand out."""
        sock = self._writer.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return True
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(sock.fileno(), select.POLLIN)
        return bool(self._poller.poll(0))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def transport(**options: Any) -> httpx.AsyncHTTPTransport:
    """``httpx.AsyncHTTPTransport(**options)`` whose connections are asyncio streams; an
    httpx that no longer keeps its pool where this looks keeps anyio's."""
    made = httpx.AsyncHTTPTransport(**options)
    pool = getattr(made, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = AsyncioBackend()  # noqa: SLF001
    return made


class _Cookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class AsyncClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose cookie jar looks only at responses that set one."""

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._cookies = _Cookies(self.cookies)


SHARD = 4  # connections per client: the pool's work per request grows with their square


class Clients:
    """One exit's clients: ``connections`` connections over clients of ``SHARD`` at most,
    a request going to the client with the fewest under way; one cookie jar for all."""

    def __init__(self, make: Callable[[int], httpx.AsyncClient], connections: int):
        count = -(-connections // SHARD)
        sizes = [connections // count + (i < connections % count) for i in range(count)]
        self.clients = [make(size) for size in sizes]
        for client in self.clients[1:]:
            client.cookies.jar = self.clients[0].cookies.jar
        self.busy = [0] * count

    async def get(self, url: str, **options: Any) -> httpx.Response:
        which = self.busy.index(min(self.busy))
        self.busy[which] += 1
        try:
            return await self.clients[which].get(url, **options)
        finally:
            self.busy[which] -= 1

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
