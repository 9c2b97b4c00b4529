"""Real forward proxies for tests: tinyproxy processes on loopback, stopped by process id.

Proxy ``i`` listens on 127.0.0.1 and connects out from 127.0.0.``i + 2``, so a site sees
each proxy as its own client address. ``StallingProxy`` is a proxy that hangs mid-page.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from harvest.workers import free_port

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
MISSING = "tinyproxy is not installed (apt-get install tinyproxy)"


def available() -> bool:
    return Path(TINYPROXY).is_file()


@dataclass
class TinyProxy:
    port: int
    bind: str  # the source address the site sees
    auth: tuple[str, str] | None
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        creds = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        return f"http://{creds}127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"


def start(n: int, workdir: Path, auth: dict[int, tuple[str, str]] | None = None) -> list[TinyProxy]:
    """Starts ``n`` tinyproxies; ``auth`` maps a proxy's number to its BasicAuth user."""
    proxies: list[TinyProxy] = []
    try:
        for i in range(n):
            proxies.append(_start_one(i, workdir, (auth or {}).get(i)))
    except BaseException:
        stop(proxies)
        raise
    return proxies


@contextmanager
def running(
    n: int, workdir: Path, auth: dict[int, tuple[str, str]] | None = None
) -> Iterator[list[TinyProxy]]:
    """``start``ed proxies, ``stop``ped when the block ends: what each test module's
    ``tinyproxies`` fixture yields."""
    started = start(n, workdir, auth)
    try:
        yield started
    finally:
        stop(started)


def _start_one(i: int, workdir: Path, auth: tuple[str, str] | None) -> TinyProxy:
    port, bind = free_port(), f"127.0.0.{i + 2}"
    conf = workdir / f"tinyproxy-{i}.conf"
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        f"Bind {bind}",
        f'PidFile "{workdir}/tinyproxy-{i}.pid"',
        "LogLevel Warning",
        "MaxClients 100",
        "Timeout 30",
        "DisableViaHeader Yes",
    ]
    if auth:
        lines.append(f"BasicAuth {auth[0]} {auth[1]}")
    conf.write_text("\n".join(lines) + "\n")
    log = (workdir / f"tinyproxy-{i}.log").open("wb")
    process = subprocess.Popen([TINYPROXY, "-d", "-c", str(conf)], stdout=log, stderr=log)
    proxy = TinyProxy(port, bind, auth, process)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tinyproxy {i} exited with {process.returncode}; see {log.name}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proxy
        except OSError:
            time.sleep(0.05)
    stop([proxy])
    raise RuntimeError(f"tinyproxy {i} did not listen on port {port}; see {log.name}")


def stop(proxies: list[TinyProxy]) -> None:
    for proxy in proxies:
        if proxy.process.poll() is None:
            os.kill(proxy.process.pid, signal.SIGTERM)
    for proxy in proxies:
        try:
            proxy.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proxy.process.pid, signal.SIGKILL)
            proxy.process.wait()


class _StallingHandler(BaseHTTPRequestHandler):
    """Relays plain-HTTP GETs, except those whose path has ``server.stall`` in it: these it
    holds open, unanswered, until the proxy stops."""

    protocol_version = "HTTP/1.1"
    server: StallingProxy

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if self.server.stall in url.path:
            self.server.stalled.append(url.path)
            self.server.stopping.wait(120)
            return
        upstream = http.client.HTTPConnection(url.netloc, timeout=30)
        try:
            upstream.request("GET", url.path + (f"?{url.query}" if url.query else ""))
            answer = upstream.getresponse()
            body = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in {"connection", "transfer-encoding", "content-length"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class StallingProxy(ThreadingHTTPServer):
    """A forward proxy that answers a page but never the requests its scripts make (any
    path with ``stall`` in it): the fault of a proxy that hangs mid-page."""

    daemon_threads = True

    def __init__(self, stall: str):
        super().__init__(("127.0.0.1", 0), _StallingHandler)
        self.stall = stall
        self.stalled: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> StallingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
