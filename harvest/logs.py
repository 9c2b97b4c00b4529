"""Logs on stderr, the same for the command line and the service: text for people, or one
JSON object a line (``--log-format json``, the service's own) for a log shipper or ``jq``.

``harvest --log-level``/``--log-format`` set ``HARVEST_LOG_LEVEL``/``HARVEST_LOG_FORMAT``,
so that the processes a command starts (a crawl's workers, the service's runs) log alike.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

LEVEL = "HARVEST_LOG_LEVEL"
FORMAT = "HARVEST_LOG_FORMAT"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT = "%(asctime)s [%(name)s] %(levelname)s: %(message)s"

# attributes every LogRecord has; anything else was passed with ``extra=`` and is kept
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# uvicorn's copy of the message with terminal colours
_DROPPED = _STANDARD | {"color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _DROPPED})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def level(default: str) -> str:
    """The level chosen for stderr: ``--log-level``, else ``default``."""
    chosen = os.environ.get(LEVEL, "").upper()
    return chosen if chosen in LEVELS else default


def as_json(default: bool = False) -> bool:
    chosen = os.environ.get(FORMAT, "").lower()
    return chosen == "json" if chosen in ("json", "text") else default


def stderr_handler(
    at: str, text: logging.Formatter | None = None, json_default: bool = False
) -> logging.Handler:
    """A handler on stderr at level ``at``, in the chosen format; ``text`` formats it
    when that is text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(at)
    json_out = as_json(json_default)
    handler.setFormatter(JsonFormatter() if json_out else (text or logging.Formatter(TEXT)))
    return handler


def setup(default: str = "WARNING", json_default: bool = False) -> None:
    """Routes every logger through one stderr handler at the chosen level and format."""
    root = logging.getLogger()
    root.handlers[:] = [stderr_handler(level(default), json_default=json_default)]
    root.setLevel(level(default))
