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
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AnsweredPredictions) for f in access.filters):
        access.addFilter(AnsweredPredictions())


class AnsweredPredictions(logging.Filter):
    """Leaves out of the access log the ``POST /predict`` requests answered 200: the
    prediction log keeps those (``serve.log_sample``), and at thousands a second their
    lines would bury every other and take a sixth of the event loop's time."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn's access record: (client, method, path with query, HTTP version, status)
        if isinstance(args, tuple) and len(args) == 5:
            _, method, path, _, status = args
            return not (
                status == 200 and method == "POST" and str(path).split("?", 1)[0] == "/predict"
            )
        return True
