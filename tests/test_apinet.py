"""An API crawl's httpx clients (spiders/apinet.py) against a real HTTP/1.1 server on
loopback: bodies of any size and framing, a server that hangs up an idle connection, one
that never answers, a port nobody listens on, and cookies shared by every client.
Also the row hash's faster JSON (ingestion/canonical.py) against json itself."""

from __future__ import annotations

import asyncio
import datetime
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ingestion import canonical
from spiders import apinet


@dataclass
class Server:
    url: str
    connections: int = 0


async def _handle(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    server.connections += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *lines = head.decode().split("\r\n")
            headers = dict(h.split(": ", 1) for h in lines if h)
            target = urlsplit(line.split(" ")[1])
            query = {k: v[0] for k, v in parse_qs(target.query).items()}
            extra, body, chunked, close = "", b"", False, False
            if target.path == "/hang":
                await asyncio.sleep(3600)
            elif target.path == "/set":
                extra, body = "Set-Cookie: session=s3cret; Path=/\r\n", b"set"
            elif target.path == "/echo":
                body = headers.get("Cookie", "").encode()
            elif target.path == "/body":
                body = random.Random(int(query["seed"])).randbytes(int(query["n"]))
                chunked = query.get("chunked") == "1"
                close = query.get("close") == "1"  # hung up after, without saying so
            if chunked:
                writer.write(
                    f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode()
                )
                for at in range(0, len(body), 7919):
                    part = body[at : at + 7919]
                    writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(
                    f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body
                )
            await writer.drain()
            if close:
                await asyncio.sleep(0.02)  # once the client has put the connection back
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    server = Server("")
    listener = await asyncio.start_server(lambda r, w: _handle(server, r, w), "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    async with listener:
        yield server
        listener.close()


def client(connections: int = 4, timeout: float = 10.0) -> httpx.AsyncClient:
    return apinet.AsyncClient(
        transport=apinet.transport(
            limits=httpx.Limits(max_connections=connections), trust_env=False
        ),
        timeout=timeout,
        trust_env=False,
    )


def test_bodies_of_any_size_and_framing_arrive_whole_over_kept_connections() -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    asks = [
        (
            rng.choice([0, 1, rng.randrange(1, 70_000), rng.randrange(1, 3_000_000)]),
            rng.random() < 0.5,
            rng.randrange(2**32),
        )
        for _ in range(24)
    ]

    async def main() -> tuple[list[bytes], int]:
        async with serving() as server, client(connections=4) as c:
            answers = await asyncio.gather(
                *(c.get(f"{server.url}/body?n={n}&chunked={int(ch)}&seed={s}") for n, ch, s in asks)
            )
            return [a.content for a in answers], server.connections

    bodies, connections = asyncio.run(main())
    for (n, _, s), body in zip(asks, bodies, strict=True):
        assert body == random.Random(s).randbytes(n), f"seed {seed}: body of {n} bytes"
    assert connections <= 4, f"seed {seed}: connections were not kept for the next request"


def test_a_connection_the_server_hung_up_while_idle_is_not_handed_out_again() -> None:
    async def main() -> tuple[list[int], int]:
        async with serving() as server, client(connections=1) as c:
            statuses = []
            for i in range(5):
                # the server hangs up after each answer; the pool must see it, not send
                # the next request down a dead connection
                response = await c.get(f"{server.url}/body?n=100&close=1&seed={i}")
                statuses.append(response.status_code)
                await asyncio.sleep(0.1)
            return statuses, server.connections

    statuses, connections = asyncio.run(main())
    assert statuses == [200] * 5
    assert connections == 5


def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    async def main() -> None:
        async with serving() as server, client(timeout=0.3) as c:
            await c.get(f"{server.url}/hang")

    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(main())


def test_a_port_nobody_listens_on_is_a_connect_error() -> None:
    async def main() -> None:
        async with serving() as server:
            url = server.url
        async with client() as c:  # the server is gone: its port refuses
            await c.get(f"{url}/echo")

    with pytest.raises(httpx.ConnectError):
        asyncio.run(main())


def test_a_cookie_one_client_is_given_goes_out_from_every_client_of_the_exit() -> None:
    async def main() -> tuple[list[bytes], Server, int]:
        async with serving() as server:
            clients = apinet.Clients(lambda n: client(connections=n), 16)
            try:
                await clients.get(f"{server.url}/set")
                answers = await asyncio.gather(
                    *(clients.get(f"{server.url}/echo") for _ in range(32))
                )
            finally:
                await clients.aclose()
            return [a.content for a in answers], server, len(clients.clients)

    bodies, server, count = asyncio.run(main())
    assert count > 1
    assert set(bodies) == {b"session=s3cret"}
    assert server.connections > apinet.SHARD  # the requests went out through several clients


def _text(rng: random.Random) -> str:
    alphabet = [chr(c) for c in range(0x80)] + list("é’—中\u2028\xa0\x85\x7f") + ["\U0001f600"]
    size = rng.choice(
        [
            rng.randrange(12),
            rng.randrange(canonical.SHORT - 4, canonical.SHORT + 4),
            rng.randrange(2000),
        ]
    )
    plain = rng.random() < 0.5  # long texts with nothing but what most text has
    letters = 'abc \n\t"\\é’' if plain else alphabet
    return "".join(rng.choice(letters) for _ in range(size))


def _value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9)
    if kind < 3:
        return _text(rng)
    if kind == 3:
        return rng.choice([None, True, False, rng.randrange(-(10**20), 10**20)])
    if kind == 4:
        return rng.choice([0.1, -0.0, 1e300, float("nan"), float("inf")])
    if kind == 5 and depth < 2:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 6:
        return datetime.date(2020, 1, 1) + datetime.timedelta(days=rng.randrange(3000))
    if kind == 7:
        return {_text(rng): _text(rng)}
    return _text(rng)


def test_the_row_hash_text_is_jsons_own_for_any_content() -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(600):
        fields = {_text(rng): _value(rng) for _ in range(rng.randrange(6))}
        expected = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
        assert canonical.dumps(fields) == expected, f"seed {seed}: {fields!r}"
