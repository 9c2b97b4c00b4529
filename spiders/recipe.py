"""Recipes: one YAML file per source, checked in full before any request is made.

A recipe describes the whole source in flat top-level keys, and each package reads the
keys it owns as its own section: the crawl here, the gate in ``validation.section``, the
labels in ``labeling.section``; ``harvest.recipe`` composes them and reports every problem
of every section at once. The spider needs only the crawl, and spiders may not import
harvest: ``load_recipe`` and ``parse_recipe`` here read the crawl section alone and leave
the keys the other sections own to them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import pyarrow as pa
import yaml
from annotated_types import MinLen
from parsel import Selector
from parsel.csstranslator import HTMLTranslator
from pydantic import BeforeValidator, ValidationInfo, WrapValidator, field_validator
from pydantic import Field as Described
from pydantic import ValidationError as PydanticValidationError
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema
from w3lib.url import safe_url_string

from ingestion.errors import ConfigurationError, NotFoundError
from ingestion.schema import LAKE_COLUMNS
from ingestion.sections import (
    SECTION,
    Bounded,
    Checked,
    DateFormat,
    Flag,
    OneOf,
    Plain,
    Problem,
    Regex,
    Section,
    null_is,
    problem,
    problems_error,
    validate,
    worded,
    yaml_keys,
)
from spiders import apipath, hooks
from spiders.apirecipe import ApiOptions

TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "text": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    # dates stay as published in raw; the gate checks and parses them
    "date": pa.string(),
    "list": pa.list_(pa.string()),
}
# a recipe is a YAML file with either suffix, in the sources folder or at any path
RECIPE_SUFFIXES = (".yaml", ".yml")
RENDER_MODES = ("http", "browser")
# html: pages and selectors, crawled by Scrapy; api: a JSON API, by spiders/api.py
KINDS = ("html", "api")
WAIT_UNTIL = ("load", "domcontentloaded", "networkidle", "commit")
RESOURCE_TYPES = (
    "document",
    "stylesheet",
    "image",
    "media",
    "font",
    "script",
    "texttrack",
    "xhr",
    "fetch",
    "eventsource",
    "websocket",
    "manifest",
    "other",
)
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
# Scrapy reads these with getfloat though their defaults are whole numbers
FLOAT_SETTINGS = {"DNS_TIMEOUT", "DOWNLOAD_DELAY", "DOWNLOAD_TIMEOUT"}
# settings of harvest's own and of scrapy-playwright: not in Scrapy's defaults
SETTING_PREFIXES = ("HARVEST_", "PLAYWRIGHT_")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# the validation context key that carries the recipe file's path into the section
PATH = "path"


class RecipeError(ConfigurationError):
    """A recipe that cannot run; the message names the file, then each problem by its key.

    ``key`` and ``problem`` are the first problem found, ``problems`` all of them.
    """

    def __init__(
        self, path: str | Path, key: str, problem: str, more: Sequence[tuple[str, str]] = ()
    ):
        self.path, self.key, self.problem = str(path), key, problem
        self.problems = [(key, problem), *more]
        super().__init__(f"{path}: " + "; ".join(f"{k}: {p}" for k, p in self.problems))

    @classmethod
    def of(cls, path: str | Path, found: Sequence[Problem]) -> RecipeError:
        (key, first), *more = found
        return cls(path, key, first, more)


class UnknownRecipeError(NotFoundError, RecipeError):
    """No recipe by that name or path: a usage error, not a broken recipe."""


# -- the values a crawl section holds ------------------------------------------------------


def _css_problem(query: str) -> str | None:
    try:
        HTMLTranslator().css_to_xpath(query)
    except Exception as exc:  # cssselect raises several unrelated types
        return f"CSS selector does not parse: {exc}"
    return None


def _xpath_problem(query: str) -> str | None:
    try:
        Selector(text="<html/>").xpath(query)
    except ValueError as exc:
        return f"XPath does not parse: {exc}"
    return None


def _name_problem(name: str) -> str | None:
    if re.fullmatch(r"[a-z0-9_\-]+", name):
        return None
    return f"lower-case letters, digits, - and _, got {name!r}"


def _licence(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise problem(f"a note of the terms the content is under, got {value!r}")
    return value.strip()


def _start_url(value: Any) -> str:
    if (found := url_problem(value)) is not None:
        raise problem(found)
    return str(value)


def _proxy_urls(value: Any) -> tuple[str, ...]:
    """Proxy URLs, each checked; never echoed, nor urllib's message about one: either may
    hold the password."""
    if not isinstance(value, (list, tuple)):
        raise problem("a list of proxy URLs")
    found = [
        ((i,), f"not a proxy URL like http://host:port ({bad})", None)
        for i, url in enumerate(value)
        if (bad := proxy_url_problem(url)) is not None
    ]
    if found:
        raise problems_error("urls", found)
    return tuple(value)


Css = Annotated[str, Checked(_css_problem, "a CSS selector string")]
XPath = Annotated[str, Checked(_xpath_problem, "an XPath string")]
RenderMode = Annotated[str, OneOf(RENDER_MODES)]
StartUrl = Annotated[str, Plain(_start_url, {"type": "string", "format": "uri"})]
Positive = Annotated[float, Bounded(gt=0)]
Count = Annotated[int, Bounded(whole=True, ge=0)]


@dataclass(frozen=True, config=SECTION)
class Field(Section):
    """A value each item page gives: found by a CSS selector or an XPath, of a type."""

    shape: ClassVar[str] = "a mapping with css, xpath or path, and type"

    name: SkipJsonSchema[str] = ""  # the key it is under in ``fields``
    type: Annotated[str, OneOf(tuple(TYPES), "type")] = Described(
        default="str",
        description="the value's type: str, text (paragraphs joined), int, float, date (a "
        "string the gate parses) or list (every match)",
    )
    css: Css | None = Described(
        default=None, description="a CSS selector, as Scrapy takes it (::text, ::attr(name))"
    )
    xpath: XPath | None = Described(default=None, description="an XPath, instead of css")
    path: Annotated[str, Checked(apipath.problem, "a dotted path or a JSONPath")] | None = (
        Described(
            default=None,
            description="in an API recipe: the path in a record to the value, dotted or JSONPath",
        )
    )
    format: DateFormat | None = Described(
        default=None,
        description="a strptime format such as '%Y-%m-%d' a date field is published in",
    )
    required: Flag = Described(
        default=True, description="true or false: whether a row without the value is quarantined"
    )

    @property
    def arrow_type(self) -> pa.DataType:
        return TYPES[self.type]

    def __post_init__(self) -> None:
        # none at all is for a field a parse: hook fills, which the recipe checks
        if sum(q is not None for q in (self.css, self.xpath, self.path)) > 1:
            raise problem("only one of css, xpath or path")
        if self.format is not None and self.type != "date":
            raise problems_error("Field", [(("format",), "only a date field takes a format", None)])


@dataclass(frozen=True, config=SECTION)
class Follow(Section):
    """Links to follow from every page: those whose URL matches, within a part of the page."""

    shape: ClassVar[str] = "a URL regex, or a mapping with allow, restrict_css and render"

    allow: Regex = Described(description="a regex: links whose URL matches are followed")
    restrict_css: Css | None = Described(
        default=None, description="a CSS selector: only links within it are followed"
    )
    render: RenderMode | None = Described(
        default=None,
        description="http or browser: how the pages it leads to are fetched (default: "
        "the recipe's render)",
    )


def _follow(value: Any) -> Any:
    return {"allow": value} if isinstance(value, str) else value


@dataclass(frozen=True, config=SECTION)
class BrowserOptions(Section):
    """How a page is rendered: what to wait for and which resource types not to load."""

    wait_for: Css | None = Described(
        default=None, description="a CSS selector the page is waited for before it is read"
    )
    wait_until: Annotated[str, OneOf(WAIT_UNTIL)] = Described(
        default="load", description="the page load event the browser waits for"
    )
    block: tuple[Annotated[str, OneOf(RESOURCE_TYPES)], ...] = Described(
        default=("image", "font", "media"), description="a list of resource types not to load"
    )
    timeout: Positive = Described(default=30.0, description="seconds a page may take to render")
    page_budget: Annotated[int, Bounded(whole=True, gt=0)] = Described(
        default=500, description="pages rendered before the browser is restarted"
    )


@dataclass(frozen=True, config=SECTION)
class ProxyOptions(Section):
    """Proxy URLs (``http://user:pass@host:port``), listed or read from a file."""

    shape: ClassVar[str] = "a list of proxy URLs, or a mapping with urls and file"

    urls: Annotated[
        tuple[str, ...], Plain(_proxy_urls, {"type": "array", "items": {"type": "string"}})
    ] = Described(default=(), description="a list of proxy URLs like http://user:pass@host:port")
    file: str | None = Described(
        default=None, description="a path to a file with one proxy URL a line"
    )


def _proxies(value: Any) -> Any:
    if value is None:
        return {}
    return {"urls": value} if isinstance(value, list) else value


@dataclass(frozen=True, config=SECTION)
class BanPolicy(Section):
    """What counts as a ban: these statuses, or a body matching one of these regexes."""

    statuses: tuple[Annotated[int, Bounded(whole=True, ge=100, le=599)], ...] = Described(
        default=(403, 429, 503), description="a list of HTTP status codes that mean a ban"
    )
    markers: tuple[Regex, ...] = Described(
        default=(r"class=.captcha", r"(?i)access denied"),
        description="a list of regexes: a body matching one is a ban",
    )
    backoff_base: Positive = Described(
        default=1.0,
        description="seconds a banned proxy first backs off (doubled each time); with "
        "pacing on, the exit's pace times the look at a block's end instead",
    )
    backoff_max: Positive = Described(
        default=300.0, description="seconds a backoff grows to at most"
    )


@dataclass(frozen=True, config=SECTION)
class Limits(Section):
    """Bounds on a crawl (depth and pages: 0 is no bound). Defaults in spiders/settings.py."""

    depth: Count | None = Described(
        default=None, description="links followed from a start URL, at most"
    )
    pages: Count | None = Described(default=None, description="pages fetched, at most")
    bytes: Count | None = Described(default=None, description="bytes a response body may have")
    timeout: Annotated[float, Bounded(ge=0)] | None = Described(
        default=None, description="seconds a download may take"
    )
    # pages a crawl may give up on and still succeed (see spiders/account.py)
    give_up: Count = Described(
        default=0, description="pages a crawl may give up on and still succeed"
    )

    def settings(self) -> dict[str, Any]:
        pairs = {
            "DEPTH_LIMIT": self.depth,
            "CLOSESPIDER_PAGECOUNT": self.pages,
            "DOWNLOAD_MAXSIZE": self.bytes,
            "DOWNLOAD_TIMEOUT": self.timeout,
        }
        return {k: v for k, v in pairs.items() if v is not None}


def _fields(value: Any, handler: Callable[[Any], dict[str, Field]]) -> dict[str, Field]:
    """The fields, each named after its key; a field that takes a column the lake writes
    to every row is refused (the pipeline and the stages would overwrite it)."""
    if not isinstance(value, dict) or not value:
        return handler(value)
    order = {name: i for i, name in enumerate(value)}
    found: list[tuple[tuple[Any, ...], str, Any]] = [
        (
            (name,),
            f"{name!r} is a column the lake adds to every row: name the field otherwise",
            None,
        )
        for name in value
        if name in LAKE_COLUMNS
    ]
    rest = {name: spec for name, spec in value.items() if name not in LAKE_COLUMNS}
    fields: dict[str, Field] = {}
    try:
        fields = handler(rest) if rest else {}
    except PydanticValidationError as exc:
        found += [(e["loc"], worded(e), e.get("input")) for e in exc.errors()]
    if found:
        found.sort(key=lambda f: order.get(f[0][0], -1) if f[0] else -1)
        raise problems_error("fields", found)
    return {n: f if f.name == n else dataclasses.replace(f, name=n) for n, f in fields.items()}


def _no_default(schema: dict[str, Any]) -> None:
    """A default the schema does not show: it depends on other keys."""
    schema.pop("default", None)


def _settings(raw: dict[str, Any]) -> dict[str, Any]:
    """Scrapy settings, each of the type of Scrapy's default for it.

    Scrapy reads a setting only when a component needs it, with ``getint`` and the like:
    ``CONCURRENT_REQUESTS: many`` would pass here and stop the crawl once it had started.
    """
    found = [
        ((name,), bad, value)
        for name, value in raw.items()
        if (bad := _setting_problem(str(name), value)) is not None
    ]
    if found:
        raise problems_error("settings", found)
    return raw


@dataclass(frozen=True, kw_only=True, config=SECTION)
class Recipe(Section):
    """The crawl section of a recipe: what the spider needs to crawl a source."""

    name: Annotated[str, Checked(_name_problem, "lower-case letters, digits, - and _")] = Described(
        description="the source's name: lower-case letters, digits, - and _"
    )
    kind: Annotated[str, OneOf(KINDS)] = Described(
        default="html",
        description="html (pages read with selectors) or api (a JSON API, see api)",
    )
    # the file the recipe was read from, for messages; not a key of the recipe
    path: SkipJsonSchema[str] = Described(default="", validate_default=True)
    start_urls: Annotated[list[StartUrl], MinLen(1)] = Described(
        description="a non-empty list of URLs the crawl starts from"
    )
    # None when the recipe names none: the crawl stays on the hosts it starts from (see
    # domains); an empty list lets it go anywhere, as Scrapy reads one
    allowed_domains: list[str] | None = Described(
        default=None,
        description="a list of host names the crawl may fetch from, with their subdomains "
        "(default: the start URLs' hosts; [] for any host)",
    )
    follow: Annotated[
        list[Annotated[Follow, BeforeValidator(_follow, json_schema_input_type=str | Follow)]],
        null_is(list, list[str | Follow]),
    ] = Described(
        default_factory=list,
        description="a list of links to follow: URL regexes, or mappings with allow, "
        "restrict_css and render",
    )
    item_urls: Regex = Described(
        default=".*", description="a regex: pages whose URL matches yield one item each"
    )
    fields: Annotated[dict[str, Field], MinLen(1), WrapValidator(_fields)] = Described(
        description="a mapping of field name to selector"
    )
    parse: Annotated[str, Checked(hooks.problem, "MODULE:FUNCTION")] | None = Described(
        default=None,
        description="MODULE:FUNCTION, a function importable from the recipe's folder, called "
        "for each item page with the response and a BeautifulSoup tree; it returns field "
        "values to merge, or items",
    )
    text_field: str = Described(
        default="",
        json_schema_extra=_no_default,
        description="the field (or a step's output) that is labelled and trained on "
        "(default: the first field)",
    )
    settings: Annotated[dict[str, Any], WrapValidator(lambda v, h: _settings(h(v)))] = Described(
        default_factory=dict,
        description="a mapping of Scrapy setting to value, each of the type of Scrapy's "
        "default (HARVEST_* and PLAYWRIGHT_* settings too)",
    )
    render: RenderMode = Described(
        default="http", description="how pages are fetched: http, or browser (Chromium)"
    )
    browser: Annotated[BrowserOptions, null_is(dict, BrowserOptions)] = Described(
        default=BrowserOptions(), description="how pages are rendered"
    )
    proxies: Annotated[
        ProxyOptions,
        BeforeValidator(_proxies, json_schema_input_type=list[str] | ProxyOptions | None),
    ] = Described(
        default=ProxyOptions(),
        description="a list of proxy URLs, or a mapping with urls and file",
    )
    ban: Annotated[BanPolicy, null_is(dict, BanPolicy)] = Described(
        default=BanPolicy(), description="what counts as a ban"
    )
    # private, loopback and link-local addresses are refused unless a recipe allows them
    allow_private: Flag = Described(
        default=False,
        description="true or false: whether private, loopback and link-local addresses "
        "may be fetched",
    )
    limits: Annotated[Limits, null_is(dict, Limits)] = Described(
        default=Limits(), description="bounds on a crawl"
    )
    api: ApiOptions | None = Described(
        default=None, description="a JSON API's records, paging and credentials (kind: api)"
    )
    # the terms the source's content is published under, for the dataset cards
    licence: Annotated[str, Plain(_licence, {"type": "string", "minLength": 1})] | None = Described(
        default=None, description="a note of the terms the content is under, for the cards"
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str, info: ValidationInfo) -> str:
        return value or str((info.context or {}).get(PATH, ""))

    def __post_init__(self) -> None:
        self._check_kind()
        # frozen: set once, here, while the recipe is being made
        if not self.text_field:
            object.__setattr__(self, "text_field", next(iter(self.fields)))
        # limits are Scrapy settings; a setting the recipe names itself wins
        object.__setattr__(self, "settings", {**self.limits.settings(), **self.settings})

    def _check_kind(self) -> None:
        """An API recipe's fields take paths into a record, an HTML recipe's selectors."""
        api = self.kind == "api"
        found: list[tuple[tuple[str | int, ...], str, Any]] = []
        if api and self.api is None:
            found.append((("api",), "required for kind: api (records, id, paging ...)", None))
        if not api and self.api is not None:
            found.append((("api",), "only a recipe of kind: api takes an api section", None))
        if api and self.render != "http":
            found.append((("render",), "an API recipe is fetched over HTTP", self.render))
        for name, f in self.fields.items():
            if api and f.path is None:
                found.append((("fields", name), "an API recipe's field takes a path", None))
            if not api and f.path is not None:
                found.append(
                    (("fields", name, "path"), "only a field of kind: api takes a path", f.path)
                )
            if not api and f.path is None and f.css is None and f.xpath is None and not self.parse:
                found.append(
                    (
                        ("fields", name),
                        "css or xpath is required (or a parse: hook to fill it)",
                        None,
                    )
                )
        if found:
            raise problems_error("Recipe", found)

    @property
    def renders(self) -> bool:
        """Whether any request of this source may need a browser."""
        return self.render == "browser" or any(f.render == "browser" for f in self.follow)

    @property
    def field_types(self) -> dict[str, pa.DataType]:
        return {name: f.arrow_type for name, f in self.fields.items()}

    def domains(self, start_urls: list[str] | None = None) -> list[str]:
        """The hosts a crawl from ``start_urls`` (the recipe's when None) may fetch from:
        the recipe's ``allowed_domains``, else the start URLs' own hosts, so that a recipe
        that names none does not follow links across the web. Scrapy lets subdomains of
        each through as well."""
        if self.allowed_domains is not None:
            return list(self.allowed_domains)
        hosts = (urlsplit(url).hostname for url in start_urls or self.start_urls)
        return list(dict.fromkeys(h for h in hosts if h))


# -- recipe files --------------------------------------------------------------------------


def list_recipes(sources_dir: str | Path = "sources") -> list[Path]:
    """The recipe files in ``sources_dir``, sorted by source name: one per name, the one
    ``find_recipe`` takes (``.yaml`` before ``.yml``)."""
    found: dict[str, Path] = {}
    for suffix in reversed(RECIPE_SUFFIXES):
        for path in Path(sources_dir).glob(f"*{suffix}"):
            if path.is_file():
                found[path.stem] = path
    return [found[name] for name in sorted(found)]


def find_recipe(name_or_path: str, sources_dir: str | Path = "sources") -> Path:
    path = Path(name_or_path)
    if path.suffix in RECIPE_SUFFIXES:
        if not path.is_file():
            raise UnknownRecipeError(path, "path", "no such recipe file")
        return path
    for suffix in RECIPE_SUFFIXES:
        candidate = Path(sources_dir) / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    known = [p.stem for p in list_recipes(sources_dir)]
    raise UnknownRecipeError(
        Path(sources_dir) / f"{name_or_path}.yaml",
        "name",
        f"no recipe for source {name_or_path!r} (known: {', '.join(known) or 'none'})",
    )


def read_recipe(name_or_path: str | Path, sources_dir: str | Path = "sources") -> tuple[Path, Any]:
    """The recipe file a name or path stands for, and what its YAML holds."""
    path = find_recipe(str(name_or_path), sources_dir)
    try:
        return path, yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(path, "yaml", f"not valid YAML: {exc}") from exc


def recipe_mapping(raw: Any, path: str | Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RecipeError(path, "(top)", "a recipe is a mapping of keys")
    return raw


def load_recipe(name_or_path: str | Path, sources_dir: str | Path = "sources") -> Recipe:
    """The crawl section of a recipe file (``harvest.recipe.load_recipe``: the whole recipe)."""
    path, raw = read_recipe(name_or_path, sources_dir)
    return parse_recipe(raw, path)


def parse_recipe(raw: Any, path: str | Path) -> Recipe:
    """The crawl section of the recipe in ``raw``, or a RecipeError naming every problem in
    it. Keys other sections own are left to them, unread."""
    mapping = recipe_mapping(raw, path)
    keys = yaml_keys(Recipe)
    recipe, found = validate(
        Recipe, {k: v for k, v in mapping.items() if k in keys}, {PATH: str(path)}
    )
    if recipe is None:
        raise RecipeError.of(path, found)
    if recipe.parse and (why := hooks.import_problem(recipe.parse, Path(path).parent)):
        raise RecipeError(path, "parse", why)
    return recipe


def url_problem(url: Any) -> str | None:
    """Why ``url`` cannot start a crawl, or None.

    Parsed in full, as Scrapy does when it makes the request: a port past 65535 or an
    unclosed bracket would otherwise pass here and fail only once the crawl had started.
    """
    if not isinstance(url, str):
        return f"not an http(s) URL: {url!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
        safe_url_string(url)
    except ValueError as exc:
        return f"not a valid URL ({exc}): {url!r}"
    if parts.scheme not in ("http", "https"):
        return f"not an http(s) URL: {url!r}"
    if not parts.hostname or re.search(r"\s", parts.hostname):
        return f"no host name in {url!r}"
    if port == 0:
        return f"port out of range 1-65535: {url!r}"
    return None


def proxy_url_problem(url: Any) -> str | None:
    """Why ``url`` is not a proxy URL like ``http://user:pass@host:port``, or None.

    Never quotes the URL, nor urllib's message about it: either may hold the password.
    """
    if not isinstance(url, str):
        return "not a string"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        if "out of range" in str(exc):
            return "port out of range 1-65535"
        if "IPv" in str(exc):
            return "not an IP address between [ and ], or no ]"
        return "the port is not a number"
    if "://" not in url:
        return "no scheme"
    if parts.scheme not in PROXY_SCHEMES:
        return f"the scheme is not one of {', '.join(PROXY_SCHEMES)}"
    if not parts.hostname:
        return "no host"
    if port is None:
        return "no port"
    if port == 0:
        return "port out of range 1-65535"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "a path after the port"
    return None


def _setting_problem(name: str, value: Any) -> str | None:
    if name.startswith(SETTING_PREFIXES):
        return None
    defaults = _setting_defaults()
    if name not in defaults:
        near = difflib.get_close_matches(name, defaults, n=1)
        return "not a Scrapy setting" + (f" (did you mean {near[0]}?)" if near else "")
    if name == "LOG_LEVEL" and value not in LOG_LEVELS:  # the crawl's log file is kept at it
        return f"one of {', '.join(LOG_LEVELS)}, got {value!r}"
    default = defaults[name]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool) or name == "TELNETCONSOLE_ENABLED":  # 1, read as a bool
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int) and name not in FLOAT_SETTINGS:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(default, (int, float)):
        ok, want = number, "a number"
    elif isinstance(default, dict):
        ok, want = isinstance(value, dict), "a mapping"
    elif isinstance(default, list):
        ok, want = isinstance(value, list), "a list"
    else:
        return None  # strings, and settings whose default is None, take several types
    return None if ok else f"{want}, got {value!r}"


@cache
def _setting_defaults() -> dict[str, Any]:
    """Scrapy's settings with their defaults; imported only for a recipe that sets any."""
    from scrapy.settings import default_settings

    import spiders.settings

    return {
        name: getattr(module, name)
        for module in (default_settings, spiders.settings)
        for name in dir(module)
        if name.isupper()
    }
