"""The site server's ceiling: article pages fetched as fast as it answers them.

``python -m bench.loadgen URL --seconds 3 --connections 16`` prints one JSON line. Raw
asyncio streams with keep-alive, so the client spends little CPU per request and the
figure is the server's, not the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import urllib.request
from urllib.parse import urlsplit


async def fetch_loop(host: str, port: int, paths: list[str], deadline: float) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    try:
        while time.monotonic() < deadline:
            path = paths[done % len(paths)]
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            done += 1
    finally:
        writer.close()
    return done


async def load(url: str, seconds: float, connections: int) -> dict[str, float]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        listing = response.read().decode()
    paths = re.findall(r'href="(/article/[^"]+)"', listing)
    start = time.monotonic()
    counts = await asyncio.gather(
        *(
            fetch_loop(parts.hostname, parts.port, paths[i::connections] or paths, start + seconds)
            for i in range(connections)
        )
    )
    elapsed = time.monotonic() - start
    return {
        "requests": sum(counts),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(sum(counts) / elapsed, 1),
        "connections": connections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(load(args.url.rstrip("/"), args.seconds, args.connections))))


if __name__ == "__main__":
    main()
