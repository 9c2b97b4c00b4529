"""The prediction log: a sampled share of ``POST /predict`` answers, kept in the lake as
``predictions/<model>`` for drift monitoring and retraining.

Answers are queued in memory and committed by a thread of their own, a batch at a time
(every ``flush_seconds`` or ``flush_rows``), never on the request path. Each row: when, the
text's SHA-256 and length, the label, the probability of every class, the model version
and alias, and the latency; the text itself only with ``serve.log_text``. With a model's
profile (``harvest.monitor.Profiles``), also what drift monitoring compares: the share of
out-of-vocabulary tokens, the distance to the training centroid and the confidence, so
monitoring needs no text. A log that cannot be written is reported and dropped, never
allowed to slow or fail a prediction.
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

import numpy as np
import pyarrow as pa

from harvest.service import encoder

if TYPE_CHECKING:
    from harvest.monitor import Profiles
    from harvest.service.predict import Loaded
    from ingestion.lake import Lake
    from training.arrays import Floats

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
        ("oov_share", pa.float64()),
        ("centroid_distance", pa.float64()),
        ("confidence", pa.float64()),
    ]
)
# texts a flush encodes for their distance to the training centroid, per model version
# (in a child at the lowest priority: ``harvest.service.encoder``): about 0.3 s of one
# core each 2 s flush, where encoding every text of a busy n-gram model would take 40
# times the scoring itself and fall behind for good
EMBED_PER_FLUSH = 16
MAX_QUEUED = 100_000  # answers held while the lake lags; past it, the oldest are dropped


PREFIX = "predictions/"


def table_of(model: str) -> str:
    return PREFIX + model


@dataclass
class PredictionLog:
    lake: Lake
    sample: float = 1.0
    text: bool = False
    flush_seconds: float = 2.0
    flush_rows: int = 5_000
    profiles: Profiles | None = None
    rng: random.Random = field(default_factory=random.Random)
    dropped: int = 0
    _answers: list[tuple[datetime, Loaded, list[str], Floats, float]] = field(default_factory=list)
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

    def record(self, model: Loaded, texts: list[str], probs: Floats, seconds: float) -> None:
        """Queues an answer, ``texts`` and their (texts, classes) probabilities in
        ``model.scorer.classes`` order; the writer thread turns it into rows."""
        if self.sample <= 0:
            return
        with self._lock:
            self._answers.append((datetime.now(UTC), model, texts, probs, seconds))
            full = len(self._answers) >= self.flush_rows
        if full:
            self._wake.set()

    def _rows_of(
        self, at: datetime, model: Loaded, texts: list[str], probs: Floats, seconds: float
    ) -> list[dict[str, Any]]:
        from training.profile import top_probability

        keep = [i for i in range(len(texts)) if self.sample >= 1 or self.rng.random() < self.sample]
        if not keep:
            return []
        classes = model.scorer.classes
        values = np.asarray(probs, dtype=np.float64)[keep]
        labels = model.scorer.labels(values)
        sure = top_probability(values).tolist()
        return [
            {
                "at": at,
                "text_sha256": hashlib.sha256(texts[i].encode()).hexdigest(),
                "text_length": len(texts[i]),
                "text": texts[i],  # dropped after the features are taken, unless kept
                "label": label,
                "probabilities": json.dumps(dict(zip(classes, row, strict=True))),
                "model_version": model.version,
                "alias": model.alias,
                "latency_ms": seconds * 1000,
                "confidence": c,
            }
            for i, label, c, row in zip(keep, labels, sure, values.tolist(), strict=True)
        ]

    def _add_features(self, model: Loaded, rows: list[dict[str, Any]]) -> None:
        """Drift features of every row of ``model``'s version, computed in one pass."""
        profile = (
            self.profiles.get(model.name, model.version, model.scorer) if self.profiles else None
        )
        if profile is not None:
            try:
                texts = [r["text"] for r in rows]
                found = profile.features(
                    texts, EMBED_PER_FLUSH, self.rng.randrange(2**32), encoder.encode
                )
            except Exception as exc:  # the rows are still logged, without features
                log.error("drift features of %s: %s", model.name, exc)
                found = {}
            for name, values in found.items():
                if name in SCHEMA.names and name != "text_length":
                    for row, value in zip(rows, values, strict=True):
                        row[name] = None if np.isnan(value) else float(value)
        if not self.text:
            for row in rows:
                row["text"] = None

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
        by_version: dict[tuple[str, int], tuple[Loaded, list[dict[str, Any]]]] = {}
        for at, model, texts, probs, seconds in answers:
            rows = self._rows_of(at, model, texts, probs, seconds)
            by_version.setdefault((model.name, model.version), (model, []))[1].extend(rows)
        taken: dict[str, list[dict[str, Any]]] = {}
        for model, rows in by_version.values():
            self._add_features(model, rows)
            taken.setdefault(model.name, []).extend(rows)
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
