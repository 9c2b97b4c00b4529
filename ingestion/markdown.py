"""Text from the lake, recipes or users (class names, sources, expectations, URLs) inside
the Markdown this project writes: the dataset card and the model report.

Such text must read as itself: a ``|`` must not end a table cell, ``*x*`` must not turn
into emphasis, ``<script>`` must not pass as HTML, a newline must not start a block.
"""

from __future__ import annotations

import re

# the characters that mean something inside a line of GitHub's Markdown (tables, math
# included); what only means something at the start of a line never gets there (newlines
# are gone). An underscore between two letters or digits emphasises nothing: left as is,
# so snake_case names stay readable.
_SPECIAL = re.compile(r"([\\`*\[\]<>|~&$]|(?<![^\W_])_|_(?![^\W_]))")
_NEWLINES = re.compile(r"[\r\n]+")
# what a code span shows as it is: no backtick to close it, no pipe to end a table cell
_CODE_SAFE = re.compile(r"[^`|\r\n]+")


def md_escape(text: object) -> str:
    """``text`` as literal Markdown inline text, on one line."""
    return _SPECIAL.sub(r"\\\1", _NEWLINES.sub(" ", str(text)))


def md_code(text: object) -> str:
    """``text`` as a code span when one can hold it, else as escaped plain text."""
    text = str(text)
    return f"`{text}`" if _CODE_SAFE.fullmatch(text) else md_escape(text)
