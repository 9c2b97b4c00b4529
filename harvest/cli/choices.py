"""The command line's fixed choices as types, so `--help` lists them and a typo fails
before any work starts. Each is the library's own list (tests/test_cli.py checks), kept
here so that `harvest --help` imports no model code."""

from __future__ import annotations

from typing import Literal

Model = Literal["auto", "ngram", "embedding", "tfidf-logreg", "tfidf-minilm-logreg"]
Schedule = Literal["linear", "cosine", "constant"]
Strategy = Literal[
    "random", "least_confidence", "margin", "entropy", "kcenter", "hybrid", "coldstart"
]
ExportFormat = Literal["parquet", "jsonl"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["text", "json"]
Render = Literal["http", "browser"]
