"""The floor of ``POST /predict`` over HTTP: a bare ASGI app on the same uvicorn.

It reads the body, parses its JSON and answers a fixed prediction, with no framework, no
token, no model and no log: what the server stack costs a request before harvest does
anything. ``bench/serve.py`` serves it with ``uvicorn bench.rawasgi:app``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

ANSWER = json.dumps(
    {
        "model": "bare",
        "version": 0,
        "alias": "none",
        "predictions": [{"label": "a", "probabilities": {"a": 0.5, "b": 0.5}}],
    }
).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    json.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
