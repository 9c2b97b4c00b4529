"""The text a row's content hash is taken over: ``json.dumps(fields, sort_keys=True,
ensure_ascii=False, default=str)``, character for character, made faster.

Every row of every crawl is hashed, and for an API crawl, bound by its own CPU, the JSON
encoder's escaping of each character was the largest cost of taking a record. Most text
has nothing to escape but line breaks, tabs, quotes and backslashes, which ``str.replace``
finds far faster; any string with another control character, and any value that is not
a string, an integer, a boolean, null or a list of those, goes to json itself.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring
from typing import Any

_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
# what else json escapes when it need not keep to ASCII: the other control characters
_CONTROLS = tuple(chr(c) for c in range(32) if chr(c) not in "\n\r\t")
SHORT = 256  # characters: shorter strings are faster through json's own escaping


class _NotPlainError(Exception):
    """A value json itself must write."""


def _string(s: str) -> str:
    if len(s) < SHORT:
        return encode_basestring(s)
    for char, escaped in _ESCAPES:
        if char in s:
            s = s.replace(char, escaped)
    for char in _CONTROLS:  # one memchr each: faster than any scan of a character class
        if char in s:
            raise _NotPlainError
    return f'"{s}"'


def _value(v: Any) -> str:
    kind = type(v)
    if kind is str:
        return _string(v)
    if v is None:
        return "null"
    if kind is bool:
        return "true" if v else "false"
    if kind is int:
        return int.__repr__(v)
    if kind is list:
        return "[" + ", ".join([_value(x) for x in v]) + "]"
    raise _NotPlainError  # floats (NaN, infinities), mappings, dates: json's own rules


def dumps(fields: dict[str, Any]) -> str:
    """``json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)``."""
    try:
        if not all(type(k) is str for k in fields):
            raise _NotPlainError
        items = sorted(fields.items())
        return "{" + ", ".join([f"{_string(k)}: {_value(v)}" for k, v in items]) + "}"
    except _NotPlainError:
        return _JSON.encode(fields)
