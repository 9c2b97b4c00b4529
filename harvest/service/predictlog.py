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
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from harvest.service import encoder
from training.profile import top_probability

if TYPE_CHECKING:
    from harvest.monitor import Profiles
    from harvest.service.predict import Loaded
    from ingestion.lake import Lake
    from training.arrays import Floats

log = logging.getLogger(__name__)
Answer = tuple[datetime, "Loaded", list[str], "Floats", float]  # when, by, texts, probs, secs
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
# texts encoded for their distance to the training centroid, a second of logging and per
# model version (in a child at the lowest priority: ``harvest.service.encoder``): a demo
# article costs the child 40 ms of CPU, where encoding every text of a busy n-gram model
# would take hundreds of times the scoring itself and fall behind for good
EMBED_PER_SECOND = 8
EMBED_MOST = 32  # in one flush, however long since the last
MAX_QUEUED = 100_000  # texts held while the lake lags; past it, the oldest answers go


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
    _answers: deque[Answer] = field(default_factory=deque)
    _queued: int = 0  # texts in _answers
    _told: int = 0  # rows dropped that a warning has reported
    _encoded: float | None = None  # when a flush last drew texts to encode
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
            self._queued += len(texts)
            # the writer stuck (a slow lake, a child starting): memory stays bounded
            while self._queued > MAX_QUEUED and len(self._answers) > 1:
                gone = len(self._answers.popleft()[2])
                self._queued -= gone
                self.dropped += gone
            full = self._queued >= self.flush_rows
        if full:
            self._wake.set()

    def _table(self, answers: list[Answer]) -> pa.Table:
        """The logged rows of ``answers``, all of one model version, built a column at a
        time: built a dict a row, with each text tokenized here too, they held the service's
        GIL two thirds as long as scoring their texts with the n-gram model took."""
        model = answers[0][1]
        texts: list[str] = []
        parts: list[Floats] = []
        at: list[datetime] = []
        aliases: list[str] = []
        latency: list[float] = []
        for when, used, said, probs, seconds in answers:
            keep = self._kept(len(said))
            if not keep:
                continue
            texts += [said[i] for i in keep] if len(keep) < len(said) else said
            parts.append(np.asarray(probs, dtype=np.float64)[keep])
            at += [when] * len(keep)
            aliases += [used.alias] * len(keep)
            latency += [seconds * 1000] * len(keep)
        if not texts:
            return SCHEMA.empty_table()
        values = np.concatenate(parts)
        found = self._features(model, texts)
        n = len(texts)
        return pa.table(
            {
                "at": pa.array(at, SCHEMA.field("at").type),
                "text_sha256": [hashlib.sha256(t.encode()).hexdigest() for t in texts],
                "text_length": [len(t) for t in texts],
                "text": texts if self.text else pa.nulls(n, pa.string()),
                "label": model.scorer.labels(values),
                "probabilities": probability_json(model.scorer.classes, values),
                "model_version": pa.array(np.full(n, model.version, dtype=np.int64)),
                "alias": aliases,
                "latency_ms": latency,
                **{
                    name: pa.array(found[name], pa.float64(), from_pandas=True)  # NaN: null
                    if name in found
                    else pa.nulls(n, pa.float64())
                    for name in ("oov_share", "centroid_distance")
                },
                "confidence": top_probability(values),
            },
            schema=SCHEMA,
        )

    def _kept(self, n: int) -> list[int]:
        if self.sample >= 1:
            return list(range(n))
        return [i for i in range(n) if self.rng.random() < self.sample]

    def _features(self, model: Loaded, texts: list[str]) -> dict[str, Floats]:
        """Drift features of ``texts``, scored by ``model``'s version, in one pass."""
        profile = (
            self.profiles.get(model.name, model.version, model.scorer) if self.profiles else None
        )
        if profile is None:
            return {}
        key = (model.name, model.version)
        try:
            return encoder.features(
                key, profile, texts, self._embed_budget(), self.rng.randrange(2**32)
            )
        except Exception as exc:  # the rows are still logged, without features
            log.error("drift features of %s: %s", model.name, exc)
            return {}

    def _embed_budget(self) -> int:
        """Texts this flush may encode: ``EMBED_PER_SECOND`` since the last flush that
        encoded, so that flushes brought on by a full queue encode no more in all."""
        now = time.monotonic()
        since = now - self._encoded if self._encoded is not None else self.flush_seconds
        self._encoded = now
        return max(1, min(EMBED_MOST, round(EMBED_PER_SECOND * since)))

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
            answers, self._answers, self._queued = self._answers, deque(), 0
            dropped = self.dropped
        if dropped > self._told:
            log.warning(
                "prediction log: %d rows dropped so far, %d since the last flush: the "
                "writer fell behind the answers",
                dropped,
                dropped - self._told,
            )
            self._told = dropped
        by_version: dict[tuple[str, int], list[Answer]] = {}
        for answer in answers:
            by_version.setdefault((answer[1].name, answer[1].version), []).append(answer)
        taken: dict[str, list[pa.Table]] = {}
        for group in by_version.values():
            taken.setdefault(group[0][1].name, []).append(self._table(group))
        for model_name, tables in taken.items():
            table = pa.concat_tables(tables)
            if not table.num_rows:
                continue
            try:
                self.lake.append(table_of(model_name), table)
            except Exception as exc:
                self.dropped += table.num_rows
                log.error(
                    "prediction log of %s: %d rows not written: %s",
                    model_name,
                    table.num_rows,
                    exc,
                )


def probability_json(classes: list[str], values: Floats) -> list[str]:
    """Each row of (rows, classes) ``values`` as ``json.dumps({class: p})`` writes it, at
    a fraction of its cost."""
    if not np.isfinite(values).all():  # NaN and infinity are spelt otherwise
        return [json.dumps(dict(zip(classes, row, strict=True))) for row in values.tolist()]
    form = "{" + ", ".join(json.dumps(c).replace("%", "%%") + ": %r" for c in classes) + "}"
    return [form % tuple(row) for row in values.tolist()]
