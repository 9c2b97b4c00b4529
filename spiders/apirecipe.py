"""The ``api:`` section of a recipe of ``kind: api``: a JSON API crawled page by page.

Where the records are (``records``), what identifies each (``id``, which also makes its
URL), how pages follow one another (``paging``), the credentials (``auth``, from an
environment variable: a recipe holds the variable's name, never the secret) and what an
incremental crawl asks for (``since``). Fields of an API recipe take a ``path`` into the
record instead of a selector.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field as Described
from pydantic.dataclasses import dataclass

from ingestion.sections import SECTION, Bounded, Checked, Flag, OneOf, Section, null_is
from spiders import apipath

AUTH_TYPES = ("bearer", "header", "query", "basic")
PAGING_STYLES = ("cursor", "page", "offset", "next", "link", "none")
# each style's parameter, size parameter, first position and body path, unless set
PAGING_DEFAULTS: dict[str, tuple[str | None, str | None, int, str | None]] = {
    "cursor": ("cursor", "limit", 0, "next_cursor"),
    "page": ("page", "per_page", 1, None),
    "offset": ("offset", "limit", 0, None),
    "next": (None, "limit", 0, "next"),
    "link": (None, "per_page", 0, None),
    "none": (None, None, 0, None),
}


def _env_problem(name: str) -> str | None:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return None
    return f"the name of an environment variable (letters, digits, _), got {name!r}"


def _item_url_problem(template: str) -> str | None:
    if "{id}" not in template:
        return "a URL template with {id} in it, such as /api/v1/articles/{id}"
    return None


Path = Annotated[str, Checked(apipath.problem, "a dotted path or a JSONPath")]
EnvName = Annotated[str, Checked(_env_problem, "an environment variable's name")]
Scalar = str | int | float | bool


@dataclass(frozen=True, config=SECTION)
class ApiAuth(Section):
    """Credentials sent with every request, read from an environment variable."""

    type: Annotated[str, OneOf(AUTH_TYPES)] = Described(
        description="bearer (Authorization: Bearer), header (an API key header), query (an "
        "API key parameter) or basic (the variable holds user:password)"
    )
    env: EnvName = Described(description="the environment variable that holds the secret")
    name: str | None = Described(
        default=None,
        description="the header (default X-API-Key) or query parameter (default api_key) "
        "an API key goes in",
    )

    @property
    def key_name(self) -> str:
        return self.name or ("api_key" if self.type == "query" else "X-API-Key")


@dataclass(frozen=True, config=SECTION)
class Paging(Section):
    """How one page leads to the next."""

    style: Annotated[str, OneOf(PAGING_STYLES)] = Described(
        default="cursor",
        description="cursor (a cursor in the body), page (a page number), offset "
        "(offset and limit), next (a next URL in the body), link (the Link header) or none",
    )
    param: str | None = Described(
        default=None,
        description="the query parameter of the cursor, page or offset (default cursor, page, "
        "offset)",
    )
    size_param: str | None = Described(
        default=None,
        description="the query parameter of the page size (default per_page for page and "
        "link paging, else limit)",
    )
    size: Annotated[int, Bounded(whole=True, gt=0)] | None = Described(
        default=None, description="records asked for per page (default: the API's own)"
    )
    start: Annotated[int, Bounded(whole=True, ge=0)] | None = Described(
        default=None, description="the first page number (default 1) or offset (default 0)"
    )
    next: Path | None = Described(
        default=None,
        description="the path in the body to the next cursor (default next_cursor) or next URL "
        "(default next)",
    )
    total: Path | None = Described(
        default=None,
        description="the path in the body to the number of pages (page paging) or of records "
        "(offset paging): no page is asked for past it (default: pages are asked for until "
        "one comes back short)",
    )

    def _default(self, i: int) -> Any:
        return PAGING_DEFAULTS[self.style][i]

    @property
    def query_param(self) -> str | None:
        return self.param or self._default(0)

    @property
    def size_query(self) -> str | None:
        return self.size_param or self._default(1)

    @property
    def first(self) -> int:
        return self.start if self.start is not None else int(self._default(2))

    @property
    def next_path(self) -> str | None:
        return self.next or self._default(3)


@dataclass(frozen=True, config=SECTION)
class Since(Section):
    """An incremental crawl: asks only for records past the last crawl's high-water mark."""

    param: str = Described(description="the query parameter the high-water mark goes in")
    field: Path = Described(
        description="the path in a record to what the mark is the highest of (a time or a "
        "number that only grows)"
    )


@dataclass(frozen=True, config=SECTION)
class ApiOptions(Section):
    """A JSON API: its records, their identity, paging, credentials and incremental crawl."""

    records: Path = Described(description="the path in a page's body to its list of records")
    id: Path = Described(description="the path in a record to its identity")
    item_url: Annotated[str, Checked(_item_url_problem, "a URL template")] | None = Described(
        default=None,
        description="each record's URL, with {id} in it, relative to the start URL (default: "
        "the start URL's path, then /{id})",
    )
    params: dict[str, Scalar] = Described(
        default_factory=dict, description="query parameters sent with the first request"
    )
    headers: dict[str, str] = Described(
        default_factory=dict, description="headers sent with every request (no secrets here)"
    )
    auth: ApiAuth | None = Described(default=None, description="credentials, from the environment")
    paging: Annotated[Paging, null_is(dict, Paging)] = Described(
        default=Paging(), description="how pages follow one another"
    )
    since: Since | None = Described(
        default=None, description="ask only for records past the last crawl's high-water mark"
    )
    etag: Flag = Described(
        default=False,
        description="true or false: ask with the last crawl's ETag whether the first page "
        "changed, and end at once when it did not; only for an API whose first page's ETag "
        "changes with the whole collection",
    )
    concurrency: Annotated[int, Bounded(whole=True, gt=0)] = Described(
        default=16, description="requests at once, for page and offset paging"
    )
    http2: Flag = Described(default=True, description="true or false: HTTP/2 where offered")
