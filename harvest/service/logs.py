"""The service's logs: one JSON object a line on stderr unless ``--log-format text``
(``harvest.logs``, the command line's too)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from harvest import logs

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


def setup() -> None:
    """Routes every logger (uvicorn's and the scheduler's too) through one handler."""
    logs.setup(default="INFO", json_default=True)
    for name in ("uvicorn", "uvicorn.error", "apscheduler"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class AccessLog:
    """ASGI middleware: an access line (logger ``harvest.access``, uvicorn's format) for
    each HTTP request, except a ``POST /predict`` answered 200. The prediction log keeps those
    (``serve.log_sample``); at thousands a second their lines would bury every other, and
    uvicorn's own access log built a record for each before any filter could drop it, a
    tenth of the event loop's time. ``harvest serve`` turns uvicorn's off."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("harvest.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        predict = scope["path"] == "/predict" and scope["method"] == "POST"
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not (predict and message["status"] == 200):
                    self._line(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except BaseException:
            if not started:  # uvicorn answers 500
                self._line(scope, 500)
            raise

    def _line(self, scope: Scope, status: int) -> None:
        if self.log.isEnabledFor(logging.INFO):
            # uvicorn's own helpers type the scope as theirs; starlette's is a plain mapping
            self.log.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),  # type: ignore[arg-type]
                scope["method"],
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                scope["http_version"],
                status,
            )
