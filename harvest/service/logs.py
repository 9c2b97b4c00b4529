"""The service's logs: one JSON object a line on stderr unless ``--log-format text``
(``harvest.logs``, the command line's too)."""

from __future__ import annotations

import logging

from harvest import logs


def setup() -> None:
    """Routes every logger (uvicorn's and the scheduler's too) through one handler."""
    logs.setup(default="INFO", json_default=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "apscheduler"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
