"""``normalize``: Unicode NFKC, control characters out, whitespace collapsed.

Paragraph breaks survive (one blank line at most); runs of spaces, tabs and the like
become one space. A value left empty becomes null, so ``not_null`` names the problem.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import pandas as pd

from ingestion.transforms.base import Step, StepError, check_keys, column_names, strings, values

FORMS = ("NFC", "NFKC")
# C0 and C1 controls but tab and line breaks, plus invisible characters that only split
# words for search and dedup: zero width space, word joiner, byte order mark, soft hyphen
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\u200b\u2060\ufeff\u00ad]")
_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


# the same steps on ASCII text, as byte operations several times faster than the regexes:
# line breaks to \n, invisible controls out (the break controls are breaks, not deleted)
_ASCII_BREAKS = bytes.maketrans(b"\r\x0b\x0c\x1c\x1d\x1e", b"\n" * 6)
_ASCII_INVISIBLE = bytes(
    c for c in range(128) if _INVISIBLE.match(chr(c)) and c not in b"\x0b\x0c\x1c\x1d\x1e"
)


def _normalize_ascii(text: str) -> str:
    data = text.encode("ascii").replace(b"\r\n", b"\n").translate(_ASCII_BREAKS, _ASCII_INVISIBLE)
    # within a line only spaces and tabs are left: split() collapses them and strips
    data = b"\n".join(b" ".join(line.split()) for line in data.split(b"\n"))
    while b"\n\n\n" in data:
        data = data.replace(b"\n\n\n", b"\n\n")
    return data.strip().decode("ascii")


def normalize_text(text: str, form: str = "NFKC") -> str:
    if text.isascii():  # NFKC leaves ASCII as it is
        return _normalize_ascii(text)
    return normalize_unicode(text, form)


def normalize_unicode(text: str, form: str = "NFKC") -> str:
    """Any text, by the regexes."""
    text = unicodedata.normalize(cast(Literal["NFC", "NFKC"], form), text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _INVISIBLE.sub("", text)
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


@dataclass(frozen=True)
class Normalize(Step):
    name: ClassVar[str] = "normalize"
    columns: tuple[str, ...]
    form: str = "NFKC"

    @classmethod
    def from_options(cls, options: dict[str, Any], text_field: str) -> Normalize:
        check_keys(options, {"columns", "form"})
        form = options.get("form", "NFKC")
        if form not in FORMS:
            raise StepError("form", f"one of {', '.join(FORMS)}")
        return cls(columns=column_names(options, "columns", (text_field,)), form=form)

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.columns

    @property
    def outputs(self) -> tuple[str, ...]:
        return ()  # it rewrites its inputs in place

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        for column in self.columns:
            normal = [
                (normalize_text(v, self.form) or None) if isinstance(v, str) else v
                for v in values(df, column)
            ]
            if all(v is None or isinstance(v, str) for v in normal):
                out[column] = strings(normal)
        return out
