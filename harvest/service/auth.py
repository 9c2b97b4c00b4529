"""The API's bearer token: ``$HARVEST_API_TOKEN``, else one generated once and kept, readable
by the owner alone, beside the run history."""

import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

TOKEN_ENV = "HARVEST_API_TOKEN"


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


def bearer(token: str) -> Callable[..., None]:
    """A dependency that answers 401 unless the request carries ``Bearer <token>``; the
    OpenAPI document shows it as the routes' security scheme."""
    if not token:
        raise ValueError("the API token is empty")
    expected = token.encode()
    scheme = HTTPBearer(auto_error=False, description=f"the token in ${TOKEN_ENV}")

    def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(scheme)]) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401,
                f"missing or wrong API token (Authorization: Bearer ${TOKEN_ENV})",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
