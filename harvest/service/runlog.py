"""A run's log over HTTP (``GET /runs/{id}/log``): whole, its last lines, or followed.

Following streams what the run's steps write as they write it and ends when the run has
ended and every byte of its log is sent. It never waits without a bound: it also ends
after ``idle`` seconds without a new byte and after ``timeout`` seconds in all, with a
last line that says why, so a client knows to ask again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from ingestion.runs import ACTIVE

MAX_TAIL = 100_000  # lines
CHUNK = 64 * 1024
POLL = 0.25  # seconds between looks at a followed log


def tail_offset(path: Path, lines: int) -> int:
    """Where the last ``lines`` lines of ``path`` start (a last line without its newline
    counts), read from the end a block at a time."""
    with path.open("rb") as f:
        end = f.seek(0, 2)
        if lines <= 0 or end == 0:
            return end
        f.seek(end - 1)
        # a final newline ends the last line; it does not start another
        wanted = lines + (1 if f.read(1) == b"\n" else 0)
        pos, seen = end, 0
        while pos > 0:
            step = min(CHUNK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            count = block.count(b"\n")
            if seen + count >= wanted:
                cut = len(block)
                for _ in range(wanted - seen):
                    cut = block.rindex(b"\n", 0, cut)
                return pos + cut + 1
            seen += count
        return 0


def read_from(path: Path, offset: int, limit: int = CHUNK) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(limit)
    except FileNotFoundError:
        return b""


async def stream(
    run: Callable[[], Awaitable[dict[str, Any] | None]],
    tail: int | None,
    follow: bool,
    idle: float,
    timeout: float,
) -> AsyncIterator[bytes]:
    """The log of the run ``run()`` reads (fresh at each call): from its last ``tail``
    lines or its start; then, with ``follow``, what is added until the run ends."""
    began = quiet_since = time.monotonic()
    path: Path | None = None
    offset = 0
    while True:
        current = await run()
        ended = current is None or current["status"] not in ACTIVE
        # the history names the log a moment before its first step creates it
        named = Path(current["log_path"]) if current and current.get("log_path") else None
        if path is None and named is not None and named.exists():
            path = named
            offset = await asyncio.to_thread(tail_offset, path, tail) if tail is not None else 0
        chunk = await asyncio.to_thread(read_from, path, offset) if path is not None else b""
        if chunk:
            offset += len(chunk)
            quiet_since = time.monotonic()
            yield chunk
            continue
        if ended or not follow:
            return
        now = time.monotonic()
        if now - quiet_since > idle:
            yield f"\n[follow ended: no output for {idle:g} s; the run is still active]\n".encode()
            return
        if now - began > timeout:
            yield f"\n[follow ended: {timeout:g} s passed; the run is still active]\n".encode()
            return
        await asyncio.sleep(POLL)
