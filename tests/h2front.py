"""A TLS front that speaks HTTP/2 to its clients and HTTP/1.1 to the server behind it, as
a CDN does before a site's API: it offers ``h2`` and ``http/1.1`` by ALPN and records what
each connection chose. Built on the ``h2`` protocol library that httpx's HTTP/2 uses."""

from __future__ import annotations

import asyncio
import http.client
import ssl
import threading
from pathlib import Path
from urllib.parse import urlsplit

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)


class H2Front:
    def __init__(self, upstream: str, cert: Path, key: Path):
        self.upstream = urlsplit(upstream)
        self.protocols: list[str | None] = []  # what ALPN chose, a connection each
        self.streams = 0  # requests answered over HTTP/2
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2", "http/1.1"])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=context), self.loop
        ).result(10)
        self.url = f"https://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        self.protocols.append(protocol)
        if protocol != "h2":  # this front answers HTTP/2 only; the record says who asked
            writer.close()
            return
        conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        requests: dict[int, dict[str, str]] = {}
        window = asyncio.Condition()
        try:
            while data := await reader.read(65_536):
                for event in conn.receive_data(data):
                    if isinstance(event, RequestReceived):
                        requests[event.stream_id] = dict(event.headers)  # type: ignore[arg-type]
                    elif isinstance(event, StreamEnded) and event.stream_id in requests:
                        headers = requests.pop(event.stream_id)
                        asyncio.create_task(
                            self._answer(conn, writer, window, event.stream_id, headers)
                        )
                    elif isinstance(event, WindowUpdated | StreamReset):
                        async with window:
                            window.notify_all()
                    elif isinstance(event, ConnectionTerminated):
                        return
                writer.write(conn.data_to_send())
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()

    async def _answer(
        self,
        conn: H2Connection,
        writer: asyncio.StreamWriter,
        window: asyncio.Condition,
        stream: int,
        headers: dict[str, str],
    ) -> None:
        status, reply, body = await asyncio.to_thread(self._fetch, headers)
        self.streams += 1
        conn.send_headers(stream, [(":status", str(status)), *reply])
        while True:
            room = min(conn.local_flow_control_window(stream), conn.max_outbound_frame_size)
            if room <= 0 and body:  # the client's window is full: wait for it to grant more
                async with window:
                    await window.wait()
                continue
            chunk, body = body[:room], body[room:]
            conn.send_data(stream, chunk, end_stream=not body)
            writer.write(conn.data_to_send())
            if not body:
                return

    def _fetch(self, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = http.client.HTTPConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=30
        )
        try:
            forwarded = {k: v for k, v in headers.items() if not k.startswith(":")}
            upstream.request(headers[":method"], headers[":path"], headers=forwarded)
            reply = upstream.getresponse()
            body = reply.read()
            kept = [
                (k.lower(), v)
                for k, v in reply.getheaders()
                if k.lower() not in ("connection", "transfer-encoding", "keep-alive", "server")
            ]
            return reply.status, kept, body
        finally:
            upstream.close()
