"""An API recipe's credentials: read from the environment variable the recipe names.

The secret goes into a request's headers or query at the moment it is sent and nowhere
else: not into a URL the crawl keeps (next URLs are stripped of it, see
``strip_query``), not into a log line (``Redact`` masks it in every record), and not
into the lake (a record's URL is made from its id).
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ingestion.errors import ConfigurationError
from spiders.apirecipe import ApiAuth

MASK = "***"


class ApiAuthError(ConfigurationError):
    """Credentials missing, or refused by the API: fix the environment, then rerun."""


@dataclass(frozen=True)
class Credentials:
    """What every request carries; ``repr`` never shows the secret."""

    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    secret: str = field(default="", repr=False)
    said: str = ""  # how the recipe asked for them, for messages

    def redact(self, text: str) -> str:
        return text.replace(self.secret, MASK) if self.secret else text


def credentials(auth: ApiAuth | None, where: str) -> Credentials:
    """The credentials ``auth`` names, from the environment; ``where`` is the recipe's path."""
    if auth is None:
        return Credentials()
    secret = os.environ.get(auth.env, "")
    said = f"{auth.type} credentials from ${auth.env}"
    if not secret:
        raise ApiAuthError(
            f"{where}: api.auth.env: ${auth.env} is not set, or empty: the recipe takes its "
            f"{auth.type} credentials from it",
            hint=f"export {auth.env}=... before the crawl",
        )
    if auth.type == "bearer":
        return Credentials({"Authorization": f"Bearer {secret}"}, {}, secret, said)
    if auth.type == "header":
        return Credentials({auth.key_name: secret}, {}, secret, said)
    if auth.type == "query":
        return Credentials({}, {auth.key_name: secret}, secret, said)
    user, colon, password = secret.partition(":")
    if not colon:
        raise ApiAuthError(
            f"{where}: api.auth.env: ${auth.env} holds no ':' between a user and a password, "
            "as basic credentials need"
        )
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return Credentials({"Authorization": f"Basic {token}"}, {}, secret, said)


def refused(source: str, status: int, creds: Credentials, url: str) -> ApiAuthError:
    """The error for a 401 or 403: which credentials the API would not take."""
    what = f"the {creds.said}" if creds.said else "no credentials (the recipe has no api.auth)"
    return ApiAuthError(
        f"crawl of {source}: the API answered {status} to {creds.redact(url)} with {what}",
        hint="check the token, or set api.auth in the recipe",
    )


def strip_query(url: str, names: set[str]) -> str:
    """``url`` without the query parameters ``names``: a next URL an API echoes them in."""
    if not names:
        return url
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    return urlunsplit(parts._replace(query=urlencode(kept)))


class Redact(logging.Filter):
    """Masks the secret in every record a handler writes, arguments included."""

    def __init__(self, creds: Credentials):
        super().__init__()
        self.creds = creds

    def filter(self, record: logging.LogRecord) -> bool:
        if self.creds.secret:
            text = record.getMessage()
            if self.creds.secret in text:
                record.msg, record.args = self.creds.redact(text), None
        return True


@contextmanager
def redacted(creds: Credentials) -> Iterator[None]:
    """While it lasts, no handler of the root logger writes the secret."""
    handlers = list(logging.getLogger().handlers)
    mask = Redact(creds)
    for handler in handlers:
        handler.addFilter(mask)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(mask)
