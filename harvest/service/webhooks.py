"""Label Studio's annotation webhooks, received by the service (``labeling.webhook``).

The receiver needs each source's Label Studio project id; they are looked up once Label
Studio answers, so a webhook with a wrong secret is refused whether it answers or not.

The secret is checked from the headers before a byte of the body is read, and the body is
read as it arrives up to a limit: whoever can reach the port cannot make the service hold
more than that limit in memory, with the secret or without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from harvest.config import Config
from ingestion.errors import InvalidInputError
from labeling.health import studio_down
from labeling.webhook import Receiver, Route

log = logging.getLogger(__name__)
UNAUTHORIZED = "missing or wrong webhook secret (Authorization: Bearer ...)"


class BodyTooLargeError(InvalidInputError):
    http_status = 413


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body; BodyTooLargeError from its Content-Length when that says too much,
    else as soon as the bytes received pass ``limit`` (a chunked body declares no length)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"the body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError(f"the body passed the limit of {limit} bytes")
    return bytes(body)


class Webhooks:
    def __init__(self, config: Config):
        self.config = config
        self._routes: dict[int, Route] | None = None
        self._lock = threading.Lock()

    def authorized(self, headers: Mapping[str, str]) -> bool:
        return Receiver(self.config.webhook_secret, {}).authorized(headers)

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        # checked before routes(), which may wait on Label Studio
        if not self.authorized(headers):
            return 401, {"error": UNAUTHORIZED}
        return Receiver(self.config.webhook_secret, self.routes()).handle(headers, body)

    def routes(self) -> dict[int, Route]:
        with self._lock:
            if self._routes is None and studio_down(self.config.studio_url) is None:
                self._routes = self._lookup()
            return self._routes or {}

    def _lookup(self) -> dict[int, Route] | None:
        from harvest import stages
        from harvest.recipe import RecipeError, load_recipe
        from ingestion.lake import Lake
        from labeling.store import LabelStore
        from labeling.sync import SyncError
        from labeling.tasktypes import task_type

        routes: dict[int, Route] = {}
        try:
            sync = stages.label_sync(self.config)
            titles = sync.project_titles()
            for path in sorted(self.config_sources()):
                try:
                    r = load_recipe(path)
                except RecipeError:
                    continue
                project_id = titles.get(stages.project_title(r.name))
                if not r.labels or project_id is None:
                    continue
                store = LabelStore.for_source(
                    Lake(self.config.lake),
                    r.name,
                    task_type(r.label_type),
                    {"project_id": project_id},
                )
                routes[int(project_id)] = Route(r.name, store)
        except SyncError as exc:
            log.warning("Label Studio projects not read, webhooks wait: %s", exc)
            return None
        return routes

    def config_sources(self) -> list[str]:
        from harvest.recipe import list_recipes

        return [str(p) for p in list_recipes(self.config.sources)]

    def register(self, url: str) -> list[dict[str, Any]]:
        """Makes each labelled source's project send its webhooks to ``url``."""
        from harvest import stages
        from labeling.webhook import register

        with self._lock:
            self._routes = None
        sync = stages.label_sync(self.config)
        for r in (stages.recipe(self.config, p) for p in self.config_sources()):
            if r.labels:
                sync.project(stages.project_title(r.name), r.labels, r.label_type)
        done = []
        for project_id, route in self.routes().items():
            hook = register(sync, project_id, url, self.config.webhook_secret)
            done.append({"source": route.source, "project_id": project_id, "webhook": hook})
        return done
