"""Paths into a JSON document: dotted (``data.items``) or a JSONPath subset (``$.data[*]``).

An API recipe names where its records are and where each field is with one of these.
Dotted paths take keys and list indexes (``links.0.href``); JSONPath takes ``$``, ``.key``,
``['key']``, ``[n]`` and ``[*]``, which is what record lists and fields need: no filters
or recursive descent, so a path means the same to every reader of the recipe.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

WILD = object()  # every element of a list, or every value of a mapping
_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+|\*)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


class PathError(ValueError):
    """A path that does not parse; the message says where."""


@cache
def parse(path: str) -> tuple[Any, ...]:
    """The steps of ``path``: keys (str), indexes (int) and ``WILD``."""
    if not path or path != path.strip():
        raise PathError("an empty path, or one with spaces around it")
    if not path.startswith("$"):
        return tuple(int(p) if p.isdigit() else p for p in path.split(".") if p) or _bad(path)
    steps: list[Any] = []
    at = 1
    while at < len(path):
        m = _TOKEN.match(path, at)
        if m is None:
            raise PathError(f"cannot read {path[at:]!r} in {path!r}")
        key, index, quoted, dquoted = m.groups()
        if key is not None:
            steps.append(WILD if key == "*" else key)
        elif index is not None:
            steps.append(WILD if index == "*" else int(index))
        else:
            steps.append(quoted if quoted is not None else dquoted)
        at = m.end()
    return tuple(steps)


def _bad(path: str) -> tuple[Any, ...]:
    raise PathError(f"no key in {path!r}")


def problem(path: str) -> str | None:
    """Why ``path`` is not a path, or None."""
    try:
        parse(path)
    except PathError as exc:
        return f"not a dotted or JSONPath path: {exc}"
    return None


def find(doc: Any, path: str) -> list[Any]:
    """Every value at ``path`` in ``doc``; [] where it leads nowhere."""
    steps = parse(path)
    if WILD not in steps:  # one value at most: walked without lists (most fields)
        value = doc
        for step in steps:
            if isinstance(value, dict) and str(step) in value:
                value = value[str(step)]
            elif (
                isinstance(step, int)
                and isinstance(value, list)
                and -len(value) <= step < len(value)
            ):
                value = value[step]
            else:
                return []
        return [value]
    found = [doc]
    for step in steps:
        nxt: list[Any] = []
        for value in found:
            if step is WILD:
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, dict):
                    nxt.extend(value.values())
            elif isinstance(step, int) and isinstance(value, list):
                if -len(value) <= step < len(value):
                    nxt.append(value[step])
            elif isinstance(value, dict) and str(step) in value:
                nxt.append(value[str(step)])
        found = nxt
    return found


def first(doc: Any, path: str) -> Any:
    """The first value at ``path``, or None."""
    found = find(doc, path)
    return found[0] if found else None


def records(doc: Any, path: str) -> list[Any]:
    """The records at ``path``: the list it leads to, or the values a wildcard found."""
    found = find(doc, path)
    if len(found) == 1 and isinstance(found[0], list) and WILD not in parse(path):
        return list(found[0])
    return found


def strings(doc: Any, path: str) -> list[str]:
    """The values at ``path`` as strings, a list's elements each one, nulls and blanks left
    out: what a field's type converts, as the selectors' matches of an HTML page."""
    out: list[str] = []
    for value in find(doc, path):
        if type(value) is str:  # most fields: one string
            if text := value.strip():
                out.append(text)
            continue
        for one in value if isinstance(value, list) else [value]:
            if one is None:
                continue
            if isinstance(one, bool):
                text = "true" if one else "false"
            elif isinstance(one, (dict, list)):
                text = json.dumps(one, ensure_ascii=False, sort_keys=True)
            else:
                text = str(one)
            if text.strip():
                out.append(text.strip())
    return out
