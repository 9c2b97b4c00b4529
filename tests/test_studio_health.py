"""The one "does Label Studio answer" check, against tiny local stand-ins."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from labeling.health import studio_down
from tests.helpers import free_port, serving


def serve(status: int) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield url


@pytest.fixture
def healthy() -> Iterator[str]:
    yield from serve(200)


@pytest.fixture
def failing() -> Iterator[str]:
    yield from serve(503)


def test_a_server_answering_health_is_up(healthy: str) -> None:
    assert studio_down(healthy) is None


def test_a_refused_port_says_so_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    why = studio_down(url)
    assert why is not None and "not reachable" in why and url in why
    assert time.monotonic() - started < 1.0


def test_an_error_status_is_down(failing: str) -> None:
    assert studio_down(failing) == f"Label Studio at {failing} answers /health with 503"


def test_a_silent_server_is_given_up_at_the_deadline() -> None:
    with socket.socket() as silent:  # accepts connections and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        why = studio_down(f"http://127.0.0.1:{silent.getsockname()[1]}", deadline=0.3)
        took = time.monotonic() - started
    assert why is not None and "timed out" in why
    assert 0.25 < took < 1.0
