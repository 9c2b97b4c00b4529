"""``POST /predict``: its request and answer, and a fast path in front of FastAPI.

FastAPI's routing, dependency solving and validation cost more CPU a request than the
n-gram model takes to score a text in a batch. The fast path, an ASGI middleware, answers
a request whose token, query and body are what the route accepts, with the route's own
body model and scoring (``answer``). Anything else (no token, an unknown query, a body the
model refuses, no default model known yet) goes on to the FastAPI route, body and all,
which answers it as documented. On 2 cores, 32 clients sending one text a request to the
n-gram model got 1,000 answers/s through the fast path against 690-790 through the route.
``harvest serve`` puts it in front of the FastAPI app, not inside it (``serving_app``):
FastAPI's own middleware (errors, telemetry, body limit) cost a one-text request more than
its scoring, and there 32 such clients got a median 3,030 answers/s against 2,250.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import time
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ingestion.errors import HarvestError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from harvest.service.predict import Loaded, Predictor
    from harvest.service.predictlog import PredictionLog
    from training.arrays import Floats

MAX_TEXT = 100_000  # characters in one text to score
MAX_TEXTS = 1_000  # texts in one request
FAST_BODY = 1 << 20  # bytes of body the fast path reads; a longer one goes to the route
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=r"\S")]
JSON_HEADERS = [(b"content-type", b"application/json")]


class PredictRequest(BaseModel):
    """One text or several: exactly one of ``text`` and ``texts``."""

    model_config = ConfigDict(extra="forbid")
    text: Text | None = None
    texts: list[Text] | None = Field(None, min_length=1, max_length=MAX_TEXTS)

    @model_validator(mode="after")
    def one_of(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of text and texts")
        return self

    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    model: str
    alias: str
    version: int = Field(description="the registered version that scored every text here")
    predictions: list[Prediction]


def predict_answer(used: Loaded, probs: Floats) -> bytes:
    """The PredictResponse of ``probs``, the (texts, classes) probabilities ``used`` gave."""
    classes = used.scorer.classes
    return json.dumps(
        {
            "model": used.name,
            "alias": used.alias,
            "version": used.version,
            "predictions": [
                {"label": label, "probabilities": dict(zip(classes, row, strict=True))}
                for label, row in zip(used.scorer.labels(probs), probs.tolist(), strict=True)
            ],
        }
    ).encode()


async def answer(
    predictor: Predictor,
    predictions: PredictionLog,
    model: str | None,
    alias: str,
    texts: list[str],
    began: float,
) -> bytes:
    """Scores ``texts`` in the next micro-batch, logs the answer, and returns its JSON:
    written here rather than validated back through PredictResponse, which on a small
    model costs more than scoring."""
    # the registry is asked in a thread only until the default is known
    name = model or predictor.known_default()
    if name is None:
        name = await asyncio.to_thread(predictor.default_model)
    used, probs = await predictor.predict(name, alias, texts)
    predictions.record(used, texts, probs, time.perf_counter() - began)
    return predict_answer(used, probs)


class PredictRoute:
    """ASGI middleware: answers a well-formed ``POST /predict`` itself (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        predictor: Predictor,
        predictions: PredictionLog,
        token: str,
        name: str,
    ) -> None:
        self.app = app
        self.predictor, self.predictions = predictor, predictions
        self.authorization = b"Bearer " + token.encode()
        self.name = re.compile(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/predict"
            or scope["method"] != "POST"
            or not self._accepts(scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        query = self._query(scope["query_string"])
        body, more = await _read(receive, FAST_BODY)
        request = None
        if query is not None and not more:
            with contextlib.suppress(ValidationError):
                request = PredictRequest.model_validate_json(body)
        if request is None or query is None or not (query.get("model") or self.known()):
            await self.app(scope, _replay(body, more, receive), send)
            return
        try:
            out = await answer(
                self.predictor,
                self.predictions,
                query.get("model"),
                query.get("alias", "champion"),
                request.all_texts(),
                began,
            )
            status = 200
        except HarvestError as exc:  # as the route's handler answers it
            out, status = json.dumps({"detail": str(exc)}).encode(), exc.http_status
        headers = [*JSON_HEADERS, (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    def known(self) -> bool:
        """Whether the default model is known without asking the registry."""
        return self.predictor.known_default() is not None

    def _accepts(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """The right token, and a JSON body."""
        token = json_body = False
        for key, value in headers:
            if key == b"authorization":
                token = hmac.compare_digest(value, self.authorization)
            elif key == b"content-type":
                json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
        return token and json_body

    def _query(self, raw: bytes) -> dict[str, str] | None:
        """``model`` and ``alias`` when each is given at most once and is a name; else
        None, for the route to answer."""
        found: dict[str, str] = {}
        for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if key not in ("model", "alias") or key in found or not self.name.fullmatch(value):
                return None
            found[key] = value
        return found


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body, or its first ``limit`` bytes or so and True when there is more."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return bytes(body), True
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body), False
        if len(body) > limit:
            return bytes(body), True


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """``receive`` with what was read already given back first."""
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return again
