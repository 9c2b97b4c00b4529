"""The prediction log: a sampled share of ``POST /predict`` answers, kept in the lake as
``predictions/<model>`` for drift monitoring and retraining.

Answers are queued in memory and committed by a thread of their own, a batch at a time
(every ``flush_seconds`` or ``flush_rows``), never on the request path. Each row: when, the
text's SHA-256 and length, the label, the probability of every class, the model version
and alias, and the latency; the text itself only with ``serve.log_text``. A log that
cannot be written is reported and dropped, never allowed to slow or fail a prediction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from training.pyfunc import PROB

if TYPE_CHECKING:
    import pandas as pd

    from harvest.service.predict import Loaded
    from ingestion.lake import Lake

log = logging.getLogger(__name__)
SCHEMA = pa.schema(
    [
        ("at", pa.timestamp("us", tz="UTC")),
        ("text_sha256", pa.string()),
        ("text_length", pa.int64()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("probabilities", pa.string()),  # JSON: class -> probability
        ("model_version", pa.int64()),
        ("alias", pa.string()),
        ("latency_ms", pa.float64()),
    ]
)
MAX_QUEUED = 100_000  # answers held while the lake lags; past it, the oldest are dropped


def table_of(model: str) -> str:
    return f"predictions/{model}"


@dataclass
class PredictionLog:
    lake: Lake
    sample: float = 1.0
    text: bool = False
    flush_seconds: float = 2.0
    flush_rows: int = 5_000
    rng: random.Random = field(default_factory=random.Random)
    dropped: int = 0
    _answers: list[tuple[datetime, Loaded, list[str], pd.DataFrame, float]] = field(
        default_factory=list
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        from ingestion.errors import ConfigurationError

        if not 0.0 <= self.sample <= 1.0:
            raise ConfigurationError(
                f"serve.log_sample is {self.sample}: the share of answers logged, 0 to 1"
            )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Commits what is queued, then ends the writer."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def record(self, model: Loaded, texts: list[str], scored: pd.DataFrame, seconds: float) -> None:
        """Queues an answer; the writer thread turns it into rows (hashing included)."""
        if self.sample <= 0:
            return
        with self._lock:
            self._answers.append((datetime.now(UTC), model, texts, scored, seconds))
            full = len(self._answers) >= self.flush_rows
        if full:
            self._wake.set()

    def _rows_of(
        self, at: datetime, model: Loaded, texts: list[str], scored: pd.DataFrame, seconds: float
    ) -> list[dict[str, Any]]:
        probs = [c for c in scored.columns if c.startswith(PROB)]
        rows = []
        for text, (_, row) in zip(texts, scored.iterrows(), strict=True):
            if self.sample < 1 and self.rng.random() >= self.sample:
                continue
            rows.append(
                {
                    "at": at,
                    "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
                    "text_length": len(text),
                    "text": text if self.text else None,
                    "label": str(row["label"]),
                    "probabilities": json.dumps({c[len(PROB) :]: float(row[c]) for c in probs}),
                    "model_version": model.version,
                    "alias": model.alias,
                    "latency_ms": seconds * 1000,
                }
            )
        return rows

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()
            if self._stop.is_set():
                self.flush()
                return

    def flush(self) -> None:
        with self._lock:
            answers, self._answers = self._answers, []
        if len(answers) > MAX_QUEUED:  # the lake lagged far behind: keep the newest
            self.dropped += len(answers) - MAX_QUEUED
            answers = answers[-MAX_QUEUED:]
        taken: dict[str, list[dict[str, Any]]] = {}
        for at, model, texts, scored, seconds in answers:
            taken.setdefault(model.name, []).extend(
                self._rows_of(at, model, texts, scored, seconds)
            )
        for model_name, rows in taken.items():
            if not rows:
                continue
            try:
                self.lake.append(table_of(model_name), pa.Table.from_pylist(rows, schema=SCHEMA))
            except Exception as exc:
                self.dropped += len(rows)
                log.error(
                    "prediction log of %s: %d rows not written: %s", model_name, len(rows), exc
                )
