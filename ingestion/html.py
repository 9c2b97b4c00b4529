"""One HTML base for every page the project writes: the reports and the dashboard.

Pages are Jinja2 templates that extend ``base.html`` (the one style block) and take their
tables from ``macros.html``. A package keeps its page templates in its own ``templates``
folder and names itself to :func:`render`, so this module never imports upward. Every
value is escaped; markup a page trusts has to arrive as :class:`markupsafe.Markup`.
Images are inlined as data URIs, so each page is one file that can be mailed or attached.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from typing import Any

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined

# the base's own templates: a package's template of the same name would shadow them
BASE_TEMPLATES = ("base.html", "base.css", "macros.html")


@dataclass(frozen=True)
class Cell:
    """A table cell with more than a value: a class, a link, or a row's heading."""

    value: Any
    cls: str | None = None
    href: str | None = None
    head: bool = False


def render(package: str, template: str, **context: Any) -> str:
    """``template`` from ``package``'s ``templates`` folder (or this one's), filled in."""
    return _environment(package).get_template(template).render(**context)


def png_uri(data: bytes) -> str:
    """A PNG as a ``data:`` URI, so the page carries its images."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@functools.cache
def _environment(package: str) -> Environment:
    # the caller's own package, already imported: naming it here is not an upward import
    loaders = [PackageLoader(package)] if package != __package__ else []
    env = Environment(
        loader=ChoiceLoader([*loaders, PackageLoader(__package__ or "ingestion")]),
        autoescape=True,
        undefined=StrictUndefined,  # a misspelt name fails the page instead of blanking it
        finalize=_blank_none,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.tests["cell"] = lambda value: isinstance(value, Cell)
    return env


def _blank_none(value: Any) -> Any:
    # a missing figure is an empty cell, not Python's "None"
    return "" if value is None else value
