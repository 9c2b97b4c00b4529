"""``parse:`` hooks: a recipe's own Python for item pages that selectors cannot express
(fields spread over siblings, tables to unpivot, text that needs cleaning).

``parse: MODULE:FUNCTION`` names a function, importable from the recipe's folder (so
``sources/hooks/news.py`` is ``hooks.news``), called for each item page as
``FUNCTION(response, soup)`` with a BeautifulSoup tree of the page (the lxml parser). It
returns field values to merge over the selector fields (a mapping), items (a list of
mappings, each merged the same way; give each its own ``url`` when a page yields
several), or None for the selector fields alone. An exception is counted against its
page in the account and the crawl goes on with the page's selector fields.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scrapy.http import TextResponse

SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
Hook = Callable[[TextResponse, Any], Any]


def problem(spec: str) -> str | None:
    return None if SPEC.fullmatch(spec) else "MODULE:FUNCTION, like hooks.news:fields"


def load(spec: str, folder: Path | None = None) -> Hook:
    """The function ``spec`` names, imported with ``folder`` (the recipe's) on the path;
    ImportError naming what is missing."""
    module_name, function = spec.split(":", 1)
    if folder is not None and str(folder.resolve()) not in sys.path:
        # kept: the spider imports it again by name, in this process and in workers
        sys.path.insert(0, str(folder.resolve()))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a syntax error in the hook's file as much as a missing one
        raise ImportError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    found = getattr(module, function, None)
    if not callable(found):
        raise ImportError(f"{module_name} has no function {function}")
    return found  # type: ignore[no-any-return]


def import_problem(spec: str, folder: Path) -> str | None:
    try:
        load(spec, folder)
    except ImportError as exc:
        return str(exc)
    return None


def apply(hook: Hook, response: TextResponse, item: dict[str, Any]) -> list[dict[str, Any]]:
    """The items of a page: ``item`` (its selector fields) with what ``hook`` returned."""
    from bs4 import BeautifulSoup

    out = hook(response, BeautifulSoup(response.text, "lxml"))
    if out is None:
        return [item]
    if isinstance(out, Mapping):
        return [{**item, **out}]
    items = list(out)
    if not all(isinstance(each, Mapping) for each in items):
        raise TypeError("a hook returns a mapping of field values, a list of them, or None")
    return [{**item, **each} for each in items]
