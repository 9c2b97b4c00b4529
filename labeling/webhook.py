"""Receives Label Studio's annotation webhooks and records each annotation in the lake.

``Receiver.handle(headers, body) -> (status, json)`` does all the work and knows nothing of
HTTP servers, so any framework can mount it; ``serve`` runs it on the standard library's
threading HTTP server. ``register`` creates the webhook in Label Studio (once per project)
that calls the receiver, with the shared secret in its ``Authorization`` header.

Label Studio sends each webhook once and ignores the answer, so the receiver is the fast
path and `harvest label pull` the reconciliation: anything missed while the receiver was
down arrives with the next pull.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ingestion.errors import InvalidInputError
from labeling.retrain import Debouncer
from labeling.store import LabelStore, StoreError
from labeling.sync import LabelSync, SyncError, SyncSetupError

log = logging.getLogger(__name__)
CREATED, UPDATED, DELETED = "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"
ACTIONS = (CREATED, UPDATED, DELETED)
MAX_BODY = 16 * 1024 * 1024
PATH = "/webhook"


class EventError(InvalidInputError):
    """An event body the receiver cannot read."""

    http_status = 400


@dataclass(frozen=True)
class Route:
    """Where the events of one Label Studio project go."""

    source: str
    store: LabelStore


class Receiver:
    def __init__(
        self, secret: str, routes: Mapping[int, Route], debouncer: Debouncer | None = None
    ):
        if not secret:
            raise ValueError("the webhook secret is empty")
        self._expected = f"Bearer {secret}".encode()
        self.routes = dict(routes)
        self.debouncer = debouncer

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """One webhook request: its headers and raw body in, (HTTP status, JSON body) out."""
        if not self.authorized(headers):
            return 401, {"error": "missing or wrong webhook secret (Authorization: Bearer ...)"}
        try:
            action, project, payload = _event(body)
        except EventError as exc:
            return 400, {"error": str(exc)}
        route = self.routes.get(project)
        if route is None:
            known = ", ".join(str(p) for p in sorted(self.routes)) or "none"
            return 404, {"error": f"project {project} is no source's project (known: {known})"}
        try:
            if action == DELETED:
                ids = _ids(payload.get("annotations"))
                removed = route.store.delete(ids)
                return 200, {"source": route.source, "action": action, "deleted": removed}
            task, annotation = _annotation(payload)
            live = route.store.upsert(task, annotation)
        except EventError as exc:
            return 400, {"error": str(exc)}
        except StoreError as exc:
            return 409, {"error": str(exc)}
        except Exception as exc:  # the lake failed: say so and keep serving; a pull catches up
            log.exception("recording %s of project %s failed", action, project)
            return 500, {"error": f"recording failed: {type(exc).__name__}: {exc}"}
        if live and self.debouncer is not None:
            self.debouncer.add(route.source)
        return 200, {
            "source": route.source,
            "action": action,
            "annotation_id": int(annotation["id"]),
            "live": live,
        }

    def authorized(self, headers: Mapping[str, str]) -> bool:
        given = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        return hmac.compare_digest(given.strip().encode(), self._expected)


def _event(body: bytes) -> tuple[str, int, dict[str, Any]]:
    try:
        payload = json.loads(body)
    # ValueError: not UTF-8, not JSON, or a number too long to read; RecursionError: nested
    # too deep
    except (ValueError, RecursionError) as exc:
        raise EventError(f"the body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise EventError("the body is not a JSON object")
    action = payload.get("action")
    if action not in ACTIONS:
        raise EventError(f"unknown action {action!r} (handled: {', '.join(ACTIONS)})")
    project = payload.get("project")
    project_id = project.get("id") if isinstance(project, dict) else None
    if project_id is None and isinstance(payload.get("annotation"), dict):
        project_id = payload["annotation"].get("project")
    if not isinstance(project_id, int):
        raise EventError(f"{action}: no project id (project.id)")
    return str(action), project_id, payload


def _annotation(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    annotation, task = payload.get("annotation"), payload.get("task")
    if not isinstance(annotation, dict) or not isinstance(annotation.get("id"), int):
        raise EventError("no annotation with an id (was the webhook created with send_payload?)")
    if not isinstance(task, dict) or not isinstance(task.get("id"), int):
        raise EventError(f"annotation {annotation['id']}: no task with an id")
    if not isinstance(task.get("data", {}), dict):
        raise EventError(f"annotation {annotation['id']}: task data is not an object")
    if not isinstance(annotation.get("result", []), list):
        raise EventError(f"annotation {annotation['id']}: result is not a list")
    return task, annotation


def _ids(annotations: Any) -> list[int]:
    if not isinstance(annotations, list):
        raise EventError(f"{DELETED}: no list of annotations")
    ids = [a.get("id") if isinstance(a, dict) else None for a in annotations]
    if not all(isinstance(i, int) for i in ids):
        raise EventError(f"{DELETED}: every annotation needs an integer id")
    return [int(i) for i in ids if i is not None]


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver  # set on the subclass serve() makes

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(411, {"error": "a Content-Length header is required"})
            return
        if length > MAX_BODY:
            self._answer(413, {"error": f"body over {MAX_BODY} bytes"})
            return
        body = self.rfile.read(length)
        if self.path.split("?")[0] != PATH:
            self._answer(404, {"error": f"webhooks are received on {PATH}"})
            return
        self._answer(*self.receiver.handle(dict(self.headers.items()), body))

    def do_GET(self) -> None:  # noqa: N802
        sources = sorted(r.source for r in self.receiver.routes.values())
        self._answer(200, {"ok": True, "sources": sources})

    def _answer(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # Label Studio waits a second and hangs up; the event is recorded all the same
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.info("%s %s", self.address_string(), format % args)


class WebhookServer:
    """A receiver on a threading HTTP server, with a thread that lets the debouncer's
    timer fire when no label arrives."""

    def __init__(
        self, receiver: Receiver, host: str = "127.0.0.1", port: int = 0, tick: float = 5.0
    ):
        handler = type("Handler", (_Handler,), {"receiver": receiver})
        self.receiver = receiver
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.tick = tick
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    def start(self) -> WebhookServer:
        self._threads = [
            threading.Thread(target=self.httpd.serve_forever, name="webhook", daemon=True),
            threading.Thread(target=self._ticker, name="webhook-tick", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def _ticker(self) -> None:
        while not self._stop.wait(self.tick):
            if self.receiver.debouncer is not None:
                self.receiver.debouncer.tick()

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=10)

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(receiver: Receiver, host: str = "127.0.0.1", port: int = 0) -> WebhookServer:
    """Starts ``receiver`` on ``host:port`` (0: a free port) in background threads."""
    return WebhookServer(receiver, host, port).start()


def register(sync: LabelSync, project_id: int, url: str, secret: str) -> int:
    """Makes project ``project_id`` send its annotation events to ``url`` with the secret;
    returns the webhook's id. Run again, it reuses the webhook (and puts a changed secret or
    action list right) instead of adding a second one."""
    headers = {"Authorization": f"Bearer {secret}"}
    settings: dict[str, Any] = dict(
        url=url,
        headers=headers,
        actions=list(ACTIONS),
        is_active=True,
        send_payload=True,
        send_for_all_actions=False,
    )
    hooks = sync.call(
        f"listing the webhooks of project {project_id}",
        sync.client.webhooks.list,
        project=str(project_id),
    )
    for hook in hooks:
        if hook.project != project_id or hook.url != url:
            continue
        current = (hook.headers, sorted(hook.actions or []), hook.is_active, hook.send_payload)
        if current != (headers, sorted(ACTIONS), True, True):
            sync.call(
                f"updating webhook {hook.id}", sync.client.webhooks.update, id=hook.id, **settings
            )
        return int(hook.id)
    try:
        created = sync.call(
            f"creating a webhook to {url} for project {project_id}",
            sync.client.webhooks.create,
            project=project_id,
            **settings,
        )
    except SyncError as exc:
        if "reserved network address" in str(exc):
            raise SyncSetupError(
                f"{exc}; Label Studio refuses webhooks to private addresses unless started "
                "with them allowed (`harvest label serve` allows loopback)"
            ) from exc
        raise
    return int(created.id)
