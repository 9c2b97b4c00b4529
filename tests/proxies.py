"""Real forward proxies for tests: tinyproxy processes on loopback, stopped by process id.

Proxy ``i`` listens on 127.0.0.1 and connects out from 127.0.0.``i + 2``, so a site sees
each proxy as its own client address.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
