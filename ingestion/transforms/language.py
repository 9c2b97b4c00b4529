"""``language``: the language of a text column, by py3langid (offline).

Writes ``language`` (ISO 639-1 code) and ``language_score`` (probability, 0 to 1); texts
shorter than ``min_chars`` get nulls, since a guess on a few words is noise.

py3langid walks its byte automaton in a Python loop, a byte at a time and a text at a
time. ``classify_batch`` walks it in one compiled pass over the whole batch and scores the
feature counts of all texts with one sparse product: the same model and the same
verdicts, many times faster. Only a text's first ``MAX_CHARS`` characters are read:
past a few thousand the verdict is settled, and the walk costs a step a byte.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from ingestion.compiled import compiled
from ingestion.transforms.base import Step, StepError, check_keys, column_name, strings, values


@functools.cache
def identifier(languages: tuple[str, ...] = ()) -> LanguageIdentifier:
    """Loading the model takes about half a second: once per process and language set."""
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if languages:
        ident.set_languages(list(languages))
    return ident


MAX_CHARS = 3_000


@functools.cache
def _tables(ident: LanguageIdentifier) -> tuple[NDArray[Any], ...]:
    """The automaton and the model as arrays (the model ships float16: scored in float32,
    as py3langid's own product does)."""
    return (
        np.asarray(ident.tk_nextmove, dtype=np.int32),
        np.asarray(ident._rowbase, dtype=np.int32),
        np.asarray(ident.tk_output, dtype=np.int32),
        np.asarray(ident.nb_ptc, dtype=np.float32),
    )


def classify_batch(
    ident: LanguageIdentifier, texts: list[str]
) -> tuple[list[str], NDArray[np.float32]]:
    """py3langid's ``classify`` of each text (its first ``MAX_CHARS`` characters), for all
    of them at once: the codes, and the probability of each."""
    from scipy import sparse  # a tenth of a second to import, for curation only

    nextmove, rowbase, output, ptc = _tables(ident)
    encoded = [ident._encode(t[:MAX_CHARS]) for t in texts]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    indptr, features, counts = _features(buffer, offsets, nextmove, rowbase, output)
    counted = sparse.csr_matrix(
        (np.log1p(counts), features, indptr), shape=(len(texts), ptc.shape[0])
    )
    scores = np.asarray(counted @ ptc, dtype=np.float32)
    # a text without any feature scores 0 for every language, as py3langid has it
    scores += ident.nb_pc * scores.any(axis=1, keepdims=True)
    scores *= (1.0 / np.sqrt(np.maximum(lengths, 1)))[:, None].astype(np.float32)
    np.exp(scores - scores.max(axis=1, keepdims=True), out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    for i, j in ident._alias_pairs:
        scores[:, i] += scores[:, j]
        scores[:, j] = 0.0
    best = scores.argmax(axis=1)
    return [ident.nb_classes[b] for b in best], scores[np.arange(len(texts)), best]


@compiled
def _features(
    buffer: NDArray[np.uint8],
    offsets: NDArray[np.int64],
    nextmove: NDArray[np.int32],
    rowbase: NDArray[np.int32],
    output: NDArray[np.int32],
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:  # pragma: no cover
    """The automaton walked over each text (``buffer[offsets[t]:offsets[t + 1]]``): the
    features it emits and how often, per text, as a CSR matrix's rows (sorted columns)."""
    n = len(offsets) - 1
    longest = 0
    for t in range(n):
        longest = max(longest, offsets[t + 1] - offsets[t])
    seen = np.empty(longest, dtype=np.int32)  # a byte emits one feature at most
    # prose has a distinct feature for about every other byte: doubled when short
    features: NDArray[np.int32] = np.empty(len(buffer) // 2 + longest, dtype=np.int32)
    counts: NDArray[np.float32] = np.empty(len(features), dtype=np.float32)
    indptr = np.zeros(n + 1, dtype=np.int64)
    k = 0
    for t in range(n):
        if len(features) - k < longest:
            features = np.concatenate((features[:k], np.empty(len(features), dtype=np.int32)))
            counts = np.concatenate((counts[:k], np.empty(len(counts), dtype=np.float32)))
        state, m = 0, 0
        for p in range(offsets[t], offsets[t + 1]):
            state = nextmove[rowbase[state] + buffer[p]]
            if output[state] >= 0:
                seen[m] = output[state]
                m += 1
        found = np.sort(seen[:m])
        for i in range(m):
            if i and found[i] == found[i - 1]:
                counts[k - 1] += 1.0
            else:
                features[k] = found[i]
                counts[k] = 1.0
                k += 1
        indptr[t + 1] = k
    return indptr, features[:k], counts[:k]


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
        texts = values(df, self.column)
        todo = [
            i
            for i, t in enumerate(texts)
            if isinstance(t, str) and len(t.strip()) >= self.min_chars
        ]
        codes: list[str | None] = [None] * len(texts)
        scores: list[float | None] = [None] * len(texts)
        found, probability = classify_batch(identifier(self.languages), [texts[i] for i in todo])
        for i, code, score in zip(todo, found, probability.tolist(), strict=True):
            codes[i], scores[i] = str(code), round(float(score), 4)
        out = df.copy()
        out[self.to] = strings(codes)
        out[f"{self.to}_score"] = pd.array(scores, dtype=pd.ArrowDtype(pa.float64()))
        return out
