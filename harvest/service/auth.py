"""Who may use the API.

- The bearer token, for every change: ``$HARVEST_API_TOKEN``, else one generated once and
  kept, readable by the owner alone, beside the run history.
- The ``Host`` header, for every request: loopback, the address the service listens on, or
  a name in ``allowed_hosts``. A web page elsewhere can point a name of its own at
  127.0.0.1 (DNS rebinding) and read the open routes from a browser on this machine; the
  browser still sends that name, so refusing unknown names closes the path.
"""

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "HARVEST_API_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def api_token(folder: Path) -> str:
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = folder / ".api_token"
    if path.exists():
        return path.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def bearer(token: str) -> Callable[..., Awaitable[None]]:
    """A dependency that answers 401 unless the request carries ``Bearer <token>``; the
    OpenAPI document shows it as the routes' security scheme."""
    if not token:
        raise ValueError("the API token is empty")
    expected = token.encode()
    scheme = HTTPBearer(auto_error=False, description=f"the token in ${TOKEN_ENV}")

    # async: a plain function would be run in the thread pool, a hop on every request
    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(scheme)],
    ) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401,
                f"missing or wrong API token (Authorization: Bearer ${TOKEN_ENV})",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def host_name(value: str) -> str:
    """The name in a Host header or an address, lower case, without port or final dot;
    IPv6 addresses in brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    if value.count(":") > 1:  # a bare IPv6 address, as given to --host
        return f"[{value}]"
    return value.split(":", 1)[0].rstrip(".")


def allowed_hosts(configured: str, bind: str | None) -> frozenset[str]:
    """Loopback, the address bound (``bind``) and the comma-separated ``configured`` names."""
    names = [*LOOPBACK, bind or "", *configured.split(",")]
    return frozenset(host_name(n) for n in names if n.strip())


class HostGuard:
    """ASGI middleware: 400 for a request whose Host header names none of ``hosts``
    (``*`` among them lets every name through)."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = frozenset(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.hosts:
            await self.app(scope, receive, send)
            return
        if host_name(Headers(scope=scope).get("host", "")) in self.hosts:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        detail = (
            "this service does not answer to the Host header given: use 127.0.0.1 or "
            "localhost, or add the name to allowed_hosts (HARVEST_ALLOWED_HOSTS)"
        )
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
