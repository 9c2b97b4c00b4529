"""Recipes: one YAML file per source, checked in full before any request is made."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import yaml
from parsel import Selector
from parsel.csstranslator import HTMLTranslator
from w3lib.url import safe_url_string

from ingestion.errors import ConfigurationError, NotFoundError
from ingestion.schema import LAKE_COLUMNS, PROVENANCE_COLUMNS
from ingestion.transforms import Step, StepError, check_columns, outputs, parse_steps
from spiders.schedule import Schedule, ScheduleError, parse_schedule

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
TOP_KEYS = {
    "name",
    "start_urls",
    "allowed_domains",
    "follow",
    "item_urls",
    "fields",
    "text_field",
    "labels",
    "label_type",
    "label_features",
    "expectations",
    "settings",
    "render",
    "browser",
    "proxies",
    "ban",
    "allow_private",
    "limits",
    "batch",
    "steps",
    "licence",
    "schedule",
}
# how a task is labelled: one class, any number of classes, or spans of the text; the same
# names as labeling.tasktypes, which spiders may not import
LABEL_TYPES = ("single", "multi", "spans")
# labeling.features.KINDS: spiders does not import labeling (a test keeps the two equal)
LABEL_FEATURES = ("tfidf", "tfidf+minilm")
FIELD_KEYS = {"css", "xpath", "type", "format", "required"}
FOLLOW_KEYS = {"allow", "restrict_css", "render"}
RENDER_MODES = {"http", "browser"}
BROWSER_KEYS = {"wait_for", "wait_until", "block", "timeout", "page_budget"}
WAIT_UNTIL = {"load", "domcontentloaded", "networkidle", "commit"}
RESOURCE_TYPES = {
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
}
PROXY_KEYS = {"urls", "file"}
LIMIT_KEYS = {"depth", "pages", "bytes", "timeout", "give_up"}
BAN_KEYS = {"statuses", "markers", "backoff_base", "backoff_max"}
EXPECTATION_KINDS = {"not_null", "unique", "length_between", "date_parses", "between"}
EXPECTATION_KEYS = {"expect", "column", "min", "max", "format"}
BATCH_KEYS = {"min_rows_ratio", "max_null_rate_increase", "numeric_drift"}
DRIFT_KEYS = {"fields", "max_mean_shift", "min_ks_pvalue"}


PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
# Scrapy reads these with getfloat though their defaults are whole numbers
FLOAT_SETTINGS = {"DNS_TIMEOUT", "DOWNLOAD_DELAY", "DOWNLOAD_TIMEOUT"}
# settings of harvest's own and of scrapy-playwright: not in Scrapy's defaults
SETTING_PREFIXES = ("HARVEST_", "PLAYWRIGHT_")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
T = TypeVar("T")


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


class UnknownRecipeError(NotFoundError, RecipeError):
    """No recipe by that name or path: a usage error, not a broken recipe."""


class _Problems:
    """Problems found so far in one recipe: one check names them all, not only the first."""

    def __init__(self, path: str | Path):
        self.path = path
        self.found: list[tuple[str, str]] = []

    def check(self, default: T, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``; ``default`` when it raised a RecipeError, whose problems are kept."""
        try:
            return fn(*args)
        except RecipeError as exc:
            self.found += exc.problems
            return default

    def add(self, key: str, problem: str) -> None:
        self.found.append((key, problem))

    def raise_any(self) -> None:
        if self.found:
            (key, problem), *more = self.found
            raise RecipeError(self.path, key, problem, more)


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    css: str | None = None
    xpath: str | None = None
    format: str | None = None
    required: bool = True

    @property
    def arrow_type(self) -> pa.DataType:
        return TYPES[self.type]


@dataclass(frozen=True)
class Follow:
    allow: str
    restrict_css: str | None = None
    render: str | None = None  # None: the source's own render mode


@dataclass(frozen=True)
class BrowserOptions:
    """How a page is rendered: what to wait for and which resource types not to load."""

    wait_for: str | None = None
    wait_until: str = "load"
    block: tuple[str, ...] = ("image", "font", "media")
    timeout: float = 30.0
    page_budget: int = 500  # pages before the browser is restarted


@dataclass(frozen=True)
class ProxyOptions:
    """Proxy URLs (``http://user:pass@host:port``), listed or read from a file."""

    urls: tuple[str, ...] = ()
    file: str | None = None


@dataclass(frozen=True)
class BanPolicy:
    """What counts as a ban: these statuses, or a body matching one of these regexes."""

    statuses: tuple[int, ...] = (403, 429, 503)
    markers: tuple[str, ...] = (r"class=.captcha", r"(?i)access denied")
    backoff_base: float = 1.0
    backoff_max: float = 300.0


@dataclass(frozen=True)
class Expectation:
    expect: str
    column: str
    min: float | None = None
    max: float | None = None
    format: str | None = None


@dataclass(frozen=True)
class BatchGates:
    """Checks on a whole batch against the source's last good batch; a batch failing one is
    held back whole. Text and list fields in ``drift_fields`` are compared by length."""

    min_rows_ratio: float | None = None
    max_null_rate_increase: float | None = None
    drift_fields: tuple[str, ...] = ()
    max_mean_shift: float | None = None
    min_ks_pvalue: float | None = None


@dataclass(frozen=True)
class Limits:
    """Bounds on a crawl (depth and pages: 0 is no bound). Defaults in spiders/settings.py."""

    depth: int | None = None
    pages: int | None = None
    bytes: int | None = None
    timeout: float | None = None
    # pages a crawl may give up on and still succeed (see spiders/account.py)
    give_up: int = 0

    def settings(self) -> dict[str, Any]:
        pairs = {
            "DEPTH_LIMIT": self.depth,
            "CLOSESPIDER_PAGECOUNT": self.pages,
            "DOWNLOAD_MAXSIZE": self.bytes,
            "DOWNLOAD_TIMEOUT": self.timeout,
        }
        return {k: v for k, v in pairs.items() if v is not None}


@dataclass(frozen=True)
class Recipe:
    name: str
    path: str
    start_urls: list[str]
    # None when the recipe names none: the crawl stays on the hosts it starts from (see
    # domains); an empty list lets it go anywhere, as Scrapy reads one
    allowed_domains: list[str] | None
    follow: list[Follow]
    item_urls: str
    fields: dict[str, Field]
    text_field: str
    labels: list[str] = field(default_factory=list)
    label_type: str = "single"
    # what the labelling model reads (labeling.features); tfidf alone for text the English
    # sentence encoder does not know
    label_features: str = "tfidf+minilm"
    expectations: list[Expectation] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    render: str = "http"
    browser: BrowserOptions = field(default_factory=BrowserOptions)
    proxies: ProxyOptions = field(default_factory=ProxyOptions)
    ban: BanPolicy = field(default_factory=BanPolicy)
    # private, loopback and link-local addresses are refused unless a recipe allows them
    allow_private: bool = False
    limits: Limits = field(default_factory=Limits)
    batch: BatchGates | None = None
    # transforms run by the gate before it checks rows (ingestion/transforms)
    steps: tuple[Step, ...] = ()
    # the terms the source's content is published under, for the dataset cards
    licence: str | None = None
    # when `harvest serve` crawls the source (spiders/schedule.py); None: on demand only
    schedule: Schedule | None = None

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


def load_recipe(name_or_path: str | Path, sources_dir: str | Path = "sources") -> Recipe:
    path = find_recipe(str(name_or_path), sources_dir)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(path, "yaml", f"not valid YAML: {exc}") from exc
    return parse_recipe(raw, path)


def parse_recipe(raw: Any, path: str | Path) -> Recipe:
    """The recipe in ``raw``, or a RecipeError naming every problem found in it.

    Each part is checked on its own; a part that depends on another (the text field and
    the expectations on the fields, say) only once that one is sound, so that one mistake
    is not reported again as several.
    """
    if not isinstance(raw, dict):
        raise RecipeError(path, "(top)", "a recipe is a mapping of keys")
    found = _Problems(path)
    for key in raw:
        found.check(None, _no_unknown, path, "", {key: None}, TOP_KEYS)
    name = found.check("", _name, path, raw.get("name"))
    start_urls: list[str] = found.check([], _start_urls, path, raw.get("start_urls"))
    allowed: list[str] | None = found.check(None, _allowed, path, raw.get("allowed_domains"))
    follow = [found.check(None, _follow, path, i, f) for i, f in enumerate(raw.get("follow") or [])]
    item_urls = raw.get("item_urls", ".*")
    found.check(None, _regex, path, "item_urls", item_urls)

    fields = found.check(None, _fields, path, raw.get("fields"))
    text_field = raw.get("text_field", next(iter(fields)) if fields else None)
    steps = None
    if fields is not None:
        steps = found.check(None, _steps, path, raw.get("steps"), fields, text_field)

    labels: list[str] = found.check([], _labels, path, raw.get("labels", []))
    label_type = raw.get("label_type", "single")
    found.check(None, _one_of, path, "label_type", label_type, LABEL_TYPES)
    label_features = raw.get("label_features", "tfidf+minilm")
    found.check(None, _one_of, path, "label_features", label_features, LABEL_FEATURES)

    expectations: list[Expectation] = []
    if fields is not None and steps is not None:
        columns = set(fields) | {"url"} | outputs(steps)
        checked = [
            found.check(None, _expectation, path, i, e, columns)
            for i, e in enumerate(raw.get("expectations") or [])
        ]
        expectations = [e for e in checked if e is not None]
    settings: dict[str, Any] = found.check({}, _settings, path, raw.get("settings", {}))
    render = raw.get("render", "http")
    found.check(None, _one_of, path, "render", render, tuple(sorted(RENDER_MODES)))

    allow_private = raw.get("allow_private", False)
    if not isinstance(allow_private, bool):
        found.add("allow_private", "true or false")

    licence = raw.get("licence")
    if licence is not None and (not isinstance(licence, str) or not licence.strip()):
        found.add("licence", "a note of the terms the content is under")

    limits = found.check(Limits(), _limits, path, raw.get("limits") or {})
    schedule = found.check(None, _schedule, path, raw.get("schedule"))
    batch = None
    if fields is not None:
        batch = found.check(None, _batch, path, raw.get("batch"), fields)
    browser = found.check(BrowserOptions(), _browser, path, raw.get("browser") or {})
    proxies = found.check(ProxyOptions(), _proxies, path, raw.get("proxies"))
    ban = found.check(BanPolicy(), _ban, path, raw.get("ban") or {})
    found.raise_any()
    # each is sound, or a problem was raised above
    assert fields is not None and steps is not None and isinstance(text_field, str)
    return Recipe(
        licence=licence.strip() if licence else None,
        schedule=schedule,
        batch=batch,
        steps=steps,
        allow_private=allow_private,
        limits=limits,
        render=render,
        browser=browser,
        proxies=proxies,
        ban=ban,
        name=name,
        path=str(path),
        start_urls=list(start_urls),
        allowed_domains=None if allowed is None else list(allowed),
        follow=[f for f in follow if f is not None],
        item_urls=item_urls,
        fields=fields,
        text_field=text_field,
        labels=list(labels),
        label_type=label_type,
        label_features=label_features,
        expectations=expectations,
        # limits are Scrapy settings; a setting the recipe names itself wins
        settings={**limits.settings(), **settings},
    )


def _name(path: str | Path, name: Any) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_\-]+", name):
        raise RecipeError(path, "name", "required, lower-case letters, digits, - and _")
    return name


def _start_urls(path: str | Path, raw: Any) -> list[str]:
    if not raw or not isinstance(raw, list):
        raise RecipeError(path, "start_urls", "required: a non-empty list of URLs")
    found = _Problems(path)
    for i, url in enumerate(raw):
        if (problem := url_problem(url)) is not None:
            found.add(f"start_urls[{i}]", problem)
    found.raise_any()
    return list(raw)


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


def _allowed(path: str | Path, allowed: Any) -> list[str] | None:
    if allowed is None:
        return None
    if not isinstance(allowed, list) or not all(isinstance(d, str) for d in allowed):
        raise RecipeError(path, "allowed_domains", "a list of host names")
    return allowed


def _fields(path: str | Path, raw: Any) -> dict[str, Field]:
    if not raw or not isinstance(raw, dict):
        raise RecipeError(path, "fields", "required: a mapping of field name to selector")
    found = _Problems(path)
    fields = {n: found.check(None, _field, path, n, spec) for n, spec in raw.items()}
    found.raise_any()
    return {n: f for n, f in fields.items() if f is not None}


def _labels(path: str | Path, labels: Any) -> list[str]:
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise RecipeError(path, "labels", "a list of class names")
    return labels


def _one_of(path: str | Path, key: str, value: Any, options: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in options:
        raise RecipeError(path, key, f"one of {', '.join(options)}, got {value!r}")


def _schedule(path: str | Path, raw: Any) -> Schedule | None:
    if raw is None:
        return None
    try:
        return parse_schedule(raw)
    except ScheduleError as exc:
        raise RecipeError(path, exc.key, exc.problem) from exc


def _settings(path: str | Path, raw: Any) -> dict[str, Any]:
    """Scrapy settings, each of the type of Scrapy's default for it.

    Scrapy reads a setting only when a component needs it, with ``getint`` and the like:
    ``CONCURRENT_REQUESTS: many`` would pass here and stop the crawl once it had started.
    """
    if not isinstance(raw, dict):
        raise RecipeError(path, "settings", "a mapping of Scrapy setting to value")
    found = _Problems(path)
    for name, value in raw.items():
        if (problem := _setting_problem(str(name), value)) is not None:
            found.add(f"settings.{name}", problem)
    found.raise_any()
    return raw


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


def _steps(
    path: str | Path, raw: Any, fields: dict[str, Field], text_field: Any
) -> tuple[Step, ...]:
    """The transform steps; the text field may be a field or a column a step writes."""
    try:
        steps = parse_steps(raw, text_field if isinstance(text_field, str) else "")
    except StepError as exc:
        raise RecipeError(path, f"steps{exc.key}", exc.problem) from exc
    if not isinstance(text_field, str) or (
        text_field not in fields and text_field not in outputs(steps)
    ):
        raise RecipeError(
            path, "text_field", f"{text_field!r} is not one of the fields (or a step's output)"
        )
    try:
        check_columns(steps, [*fields, *PROVENANCE_COLUMNS])
    except StepError as exc:
        raise RecipeError(path, f"steps{exc.key}", exc.problem) from exc
    return steps


def _no_unknown(path: str | Path, prefix: str, raw: dict[str, Any], known: set[str]) -> None:
    for key in raw:
        if key not in known:
            raise RecipeError(
                path, f"{prefix}{key}", f"unknown key (expected one of {', '.join(sorted(known))})"
            )


def _regex(path: str | Path, key: str, pattern: Any) -> None:
    if not isinstance(pattern, str):
        raise RecipeError(path, key, "a regular expression string")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise RecipeError(path, key, f"regular expression does not compile: {exc}") from exc


def _css(path: str | Path, key: str, query: Any) -> None:
    if not isinstance(query, str):
        raise RecipeError(path, key, "a CSS selector string")
    try:
        HTMLTranslator().css_to_xpath(query)
    except Exception as exc:  # cssselect raises several unrelated types
        raise RecipeError(path, key, f"CSS selector does not parse: {exc}") from exc


def _xpath(path: str | Path, key: str, query: Any) -> None:
    if not isinstance(query, str):
        raise RecipeError(path, key, "an XPath string")
    try:
        Selector(text="<html/>").xpath(query)
    except ValueError as exc:
        raise RecipeError(path, key, f"XPath does not parse: {exc}") from exc


def _follow(path: str | Path, i: int, raw: Any) -> Follow:
    key = f"follow[{i}]"
    if isinstance(raw, str):
        raw = {"allow": raw}
    if not isinstance(raw, dict):
        raise RecipeError(path, key, "a URL regex or a mapping with allow and restrict_css")
    _no_unknown(path, f"{key}.", raw, FOLLOW_KEYS)
    _regex(path, f"{key}.allow", raw.get("allow"))
    if "restrict_css" in raw:
        _css(path, f"{key}.restrict_css", raw["restrict_css"])
    render = raw.get("render")
    if render is not None and render not in RENDER_MODES:
        raise RecipeError(path, f"{key}.render", f"one of {', '.join(sorted(RENDER_MODES))}")
    return Follow(allow=raw["allow"], restrict_css=raw.get("restrict_css"), render=render)


def _mapping(path: str | Path, key: str, raw: Any, known: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RecipeError(path, key, f"a mapping with keys from {', '.join(sorted(known))}")
    _no_unknown(path, f"{key}.", raw, known)
    return raw


def _positive(path: str | Path, key: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise RecipeError(path, key, f"a positive number, got {value!r}")
    return float(value)


def _browser(path: str | Path, raw: Any) -> BrowserOptions:
    raw = _mapping(path, "browser", raw, BROWSER_KEYS)
    opts = BrowserOptions()
    if "wait_for" in raw:
        _css(path, "browser.wait_for", raw["wait_for"])
    wait_until = raw.get("wait_until", opts.wait_until)
    if wait_until not in WAIT_UNTIL:
        raise RecipeError(path, "browser.wait_until", f"one of {', '.join(sorted(WAIT_UNTIL))}")
    block = raw.get("block", list(opts.block))
    if not isinstance(block, list) or any(b not in RESOURCE_TYPES for b in block):
        raise RecipeError(
            path,
            "browser.block",
            f"a list of resource types from {', '.join(sorted(RESOURCE_TYPES))}",
        )
    return BrowserOptions(
        wait_for=raw.get("wait_for"),
        wait_until=wait_until,
        block=tuple(block),
        timeout=_positive(path, "browser.timeout", raw.get("timeout", opts.timeout)),
        page_budget=int(
            _positive(path, "browser.page_budget", raw.get("page_budget", opts.page_budget))
        ),
    )


def _proxies(path: str | Path, raw: Any) -> ProxyOptions:
    if raw is None:
        return ProxyOptions()
    if isinstance(raw, list):
        raw = {"urls": raw}
    raw = _mapping(path, "proxies", raw, PROXY_KEYS)
    urls = raw.get("urls", [])
    if not isinstance(urls, list):
        raise RecipeError(path, "proxies.urls", "a list of proxy URLs")
    for i, url in enumerate(urls):
        if (problem := proxy_url_problem(url)) is not None:
            # never echo the value: it may carry a password
            raise RecipeError(
                path, f"proxies.urls[{i}]", f"not a proxy URL like http://host:port ({problem})"
            )
    file = raw.get("file")
    if file is not None and not isinstance(file, str):
        raise RecipeError(path, "proxies.file", "a path to a file with one proxy URL a line")
    return ProxyOptions(urls=tuple(urls), file=file)


def _limits(path: str | Path, raw: Any) -> Limits:
    raw = _mapping(path, "limits", raw, LIMIT_KEYS)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise RecipeError(path, f"limits.{key}", f"a number >= 0, got {value!r}")
        values[key] = float(value) if key == "timeout" else int(value)
    return Limits(**values)


def _ban(path: str | Path, raw: Any) -> BanPolicy:
    raw = _mapping(path, "ban", raw, BAN_KEYS)
    default = BanPolicy()
    statuses = raw.get("statuses", list(default.statuses))
    if not isinstance(statuses, list) or not all(
        isinstance(x, int) and 100 <= x <= 599 for x in statuses
    ):
        raise RecipeError(path, "ban.statuses", "a list of HTTP status codes")
    markers = raw.get("markers", list(default.markers))
    if not isinstance(markers, list):
        raise RecipeError(path, "ban.markers", "a list of regular expressions")
    for i, marker in enumerate(markers):
        _regex(path, f"ban.markers[{i}]", marker)
    return BanPolicy(
        statuses=tuple(statuses),
        markers=tuple(markers),
        backoff_base=_positive(
            path, "ban.backoff_base", raw.get("backoff_base", default.backoff_base)
        ),
        backoff_max=_positive(path, "ban.backoff_max", raw.get("backoff_max", default.backoff_max)),
    )


def _field(path: str | Path, name: str, raw: Any) -> Field:
    key = f"fields.{name}"
    if name in LAKE_COLUMNS:
        # the pipeline and the stages write these to every row: a field would be overwritten
        raise RecipeError(
            path, key, f"{name!r} is a column the lake adds to every row: name the field otherwise"
        )
    if not isinstance(raw, dict):
        raise RecipeError(path, key, "a mapping with css or xpath, and type")
    _no_unknown(path, f"{key}.", raw, FIELD_KEYS)
    if ("css" in raw) == ("xpath" in raw):
        raise RecipeError(path, key, "exactly one of css or xpath is required")
    if "css" in raw:
        _css(path, f"{key}.css", raw["css"])
    else:
        _xpath(path, f"{key}.xpath", raw["xpath"])
    ftype = raw.get("type", "str")
    if not isinstance(ftype, str) or ftype not in TYPES:
        raise RecipeError(
            path, f"{key}.type", f"unknown type {ftype!r} (known: {', '.join(TYPES)})"
        )
    if "format" in raw:
        if ftype != "date":
            raise RecipeError(path, f"{key}.format", "only a date field takes a format")
        _date_format(path, f"{key}.format", raw["format"])
    return Field(
        name=name,
        type=ftype,
        css=raw.get("css"),
        xpath=raw.get("xpath"),
        format=raw.get("format"),
        required=bool(raw.get("required", True)),
    )


def _date_format(path: str | Path, key: str, fmt: Any) -> None:
    # a format with no directive matches no date: every row would go to quarantine
    if not isinstance(fmt, str) or "%" not in fmt:
        raise RecipeError(path, key, f"a strptime format such as '%Y-%m-%d', got {fmt!r}")


def _expectation(path: str | Path, i: int, raw: Any, columns: set[str]) -> Expectation:
    key = f"expectations[{i}]"
    if not isinstance(raw, dict):
        raise RecipeError(path, key, "a mapping with expect and column")
    _no_unknown(path, f"{key}.", raw, EXPECTATION_KEYS)
    kind = raw.get("expect")
    if kind not in EXPECTATION_KINDS:
        raise RecipeError(
            path,
            f"{key}.expect",
            f"unknown expectation {kind!r} (known: {', '.join(sorted(EXPECTATION_KINDS))})",
        )
    column = raw.get("column")
    if column not in columns:
        raise RecipeError(path, f"{key}.column", f"{column!r} is not a field of this recipe")
    for bound in ("min", "max"):
        if bound in raw and not isinstance(raw[bound], (int, float)):
            raise RecipeError(path, f"{key}.{bound}", "a number")
    if "format" in raw:
        _date_format(path, f"{key}.format", raw["format"])
    return Expectation(
        expect=kind, column=column, min=raw.get("min"), max=raw.get("max"), format=raw.get("format")
    )


def _batch(path: str | Path, raw: Any, fields: dict[str, Field]) -> BatchGates | None:
    if raw is None:
        return None
    raw = _mapping(path, "batch", raw, BATCH_KEYS)
    if not raw:
        raise RecipeError(path, "batch", f"name at least one of {', '.join(sorted(BATCH_KEYS))}")
    ratio = raw.get("min_rows_ratio")
    if ratio is not None and not (_number(ratio) and 0 < ratio <= 1):
        raise RecipeError(path, "batch.min_rows_ratio", f"a number in (0, 1], got {ratio!r}")
    nulls = raw.get("max_null_rate_increase")
    if nulls is not None and not (_number(nulls) and 0 <= nulls <= 1):
        raise RecipeError(
            path, "batch.max_null_rate_increase", f"a number in [0, 1], got {nulls!r}"
        )
    gates = BatchGates(min_rows_ratio=ratio, max_null_rate_increase=nulls)
    if "numeric_drift" not in raw:
        return gates
    drift = _mapping(path, "batch.numeric_drift", raw["numeric_drift"], DRIFT_KEYS)
    shift, pvalue = drift.get("max_mean_shift"), drift.get("min_ks_pvalue")
    if shift is None and pvalue is None:
        raise RecipeError(path, "batch.numeric_drift", "name max_mean_shift, min_ks_pvalue or both")
    if shift is not None and not (_number(shift) and shift > 0):
        raise RecipeError(
            path, "batch.numeric_drift.max_mean_shift", f"a positive number, got {shift!r}"
        )
    if pvalue is not None and not (_number(pvalue) and 0 < pvalue < 1):
        raise RecipeError(
            path, "batch.numeric_drift.min_ks_pvalue", f"a number in (0, 1), got {pvalue!r}"
        )
    numeric = [n for n, f in fields.items() if f.type in ("int", "float")]
    if "fields" not in drift and not numeric:
        raise RecipeError(
            path, "batch.numeric_drift.fields", "required: this recipe has no int or float fields"
        )
    names = drift.get("fields", numeric)
    if not isinstance(names, list) or not names:
        raise RecipeError(
            path,
            "batch.numeric_drift.fields",
            "a non-empty list of fields (int and float ones; text and list ones by length)",
        )
    for i, name in enumerate(names):
        if name not in fields or fields[name].type == "date":
            raise RecipeError(
                path,
                f"batch.numeric_drift.fields[{i}]",
                f"{name!r} is not a number, text or list field of this recipe",
            )
    return BatchGates(
        min_rows_ratio=ratio,
        max_null_rate_increase=nulls,
        drift_fields=tuple(names),
        max_mean_shift=shift,
        min_ks_pvalue=pvalue,
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
