"""Whether a Label Studio answers: the one check that starting it, the service's webhooks
and the label report all ask before anything slower."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

# long enough for a busy local server, short enough that a report or a webhook does not
# stall on a dead one; the SDK would retry for much longer before giving up
DEADLINE = 2.0


def studio_down(url: str, deadline: float = DEADLINE) -> str | None:
    """None when the Label Studio at ``url`` answers ``GET /health`` with 200 within
    ``deadline`` seconds, connecting included; otherwise why not, as a sentence."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    end = time.monotonic() + deadline
    conn = kind(parts.hostname or "", parts.port, timeout=deadline)
    try:
        conn.connect()
        # the connect's time comes off the reply's, so the whole check ends by the deadline
        if conn.sock is not None:
            conn.sock.settimeout(max(end - time.monotonic(), 0.001))
        conn.request("GET", parts.path.rstrip("/") + "/health")  # under its path prefix
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:  # refused, timed out, reset, garbled
        return f"Label Studio at {url} is not reachable: {exc or type(exc).__name__}"
    finally:
        conn.close()
    if status != 200:
        return f"Label Studio at {url} answers /health with {status}"
    return None
