"""The failure notice: a failed or timed-out run posted as JSON to ``notify_webhook``.

The body names the run, its source, trigger, status, error and attempt, when it is tried
again (``retry_in``, seconds; null when not), and where its log and its record are read.
The post has a deadline (``notify_timeout``, connecting and reading each). A webhook that
fails or answers an error is logged, with its address but never its path or query (a
chat service's hook carries its secret there), and the run is not touched.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import requests

from harvest.config import Config
from harvest.service.retry import delay, schedule_of
from harvest.service.runner import Runner
from ingestion.runs import FAILED, TIMED_OUT

log = logging.getLogger(__name__)
NOTIFIED = (FAILED, TIMED_OUT)


def redact(url: str) -> str:
    """``scheme://host:port/…``: enough to tell which webhook, never its secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/…"


class FailureNotice:
    """A listener of the runner's ended runs (``Runner.on_end``)."""

    def __init__(self, config: Config, runner: Runner, base_url: str):
        self.url = config.notify_webhook
        self.timeout = config.notify_timeout
        self.runner = runner
        self.base_url = base_url.rstrip("/")

    def __call__(self, run: dict[str, Any]) -> None:
        if not self.url or run["status"] not in NOTIFIED:
            return
        retry_in = None
        if run["trigger"] == "schedule":
            retry_in = delay(schedule_of(self.runner, run["source"]), run)
        self.post(self.body(run, retry_in))

    def body(self, run: dict[str, Any], retry_in: float | None) -> dict[str, Any]:
        run_url = f"{self.base_url}/runs/{run['id']}"
        return {
            "event": "run_failed",
            "run": run["id"],
            "source": run["source"],
            "trigger": run["trigger"],
            "status": run["status"],
            "error": run["error"],
            "attempt": run.get("attempt", 1),
            "retry_of": run.get("retry_of"),
            "retry_in": retry_in,
            "started_at": run["started_at"],
            "ended_at": run["ended_at"],
            "counts": run["counts"],
            "run_url": run_url,
            "log_url": f"{run_url}/log",
        }

    def post(self, body: dict[str, Any]) -> bool:
        """Whether the webhook took the notice (a 2xx answer)."""
        where = redact(self.url)
        try:
            answer = requests.post(
                self.url, json=body, timeout=(self.timeout, self.timeout), allow_redirects=False
            )
        except requests.RequestException as exc:
            log.warning(
                "failure notice of run %s not sent to %s: %s",
                body["run"],
                where,
                type(exc).__name__,
                extra={"run_id": body["run"], "webhook": where},
            )
            return False
        if not answer.ok:
            log.warning(
                "failure notice of run %s: %s answered %s",
                body["run"],
                where,
                answer.status_code,
                extra={"run_id": body["run"], "webhook": where, "http_status": answer.status_code},
            )
            return False
        log.info("failure notice of run %s sent to %s", body["run"], where)
        return True
