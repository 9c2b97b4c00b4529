"""``language``: the language of a text column, by py3langid (offline).

Writes ``language`` (ISO 639-1 code) and ``language_score`` (probability, 0 to 1); texts
shorter than ``min_chars`` get nulls, since a guess on a few words is noise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from ingestion.transforms.base import Step, StepError, check_keys, column_name, strings, values


@functools.cache
def identifier(languages: tuple[str, ...] = ()) -> LanguageIdentifier:
    """Loading the model takes about half a second: once per process and language set."""
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if languages:
        ident.set_languages(list(languages))
    return ident


@dataclass(frozen=True)
class Language(Step):
    name: ClassVar[str] = "language"
    column: str
    to: str = "language"
    min_chars: int = 20
    languages: tuple[str, ...] = ()  # the candidates, when a source is known to use few

    @classmethod
    def from_options(cls, options: dict[str, Any], text_field: str) -> Language:
        check_keys(options, {"column", "to", "min_chars", "languages"})
        min_chars = options.get("min_chars", 20)
        if not isinstance(min_chars, int) or isinstance(min_chars, bool) or min_chars < 1:
            raise StepError("min_chars", f"a whole number >= 1, got {min_chars!r}")
        languages = options.get("languages", [])
        # the model loads only when a recipe restricts it, so other recipes load fast
        if not isinstance(languages, list) or (
            languages and not set(languages) <= set(identifier().nb_classes)
        ):
            raise StepError("languages", "a list of ISO 639-1 codes py3langid knows, like [en, de]")
        return cls(
            column=column_name(options, "column", text_field),
            to=column_name(options, "to", "language"),
            min_chars=min_chars,
            languages=tuple(languages),
        )

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.column,)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.to, f"{self.to}_score")

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        ident = identifier(self.languages)
        codes: list[str | None] = []
        scores: list[float | None] = []
        for text in values(df, self.column):
            if not isinstance(text, str) or len(text.strip()) < self.min_chars:
                codes.append(None)
                scores.append(None)
                continue
            code, score = ident.classify(text)
            codes.append(str(code))
            scores.append(round(float(score), 4))
        out = df.copy()
        out[self.to] = strings(codes)
        out[f"{self.to}_score"] = pd.array(scores, dtype=pd.ArrowDtype(pa.float64()))
        return out
