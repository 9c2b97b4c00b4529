"""Online scoring for ``POST /predict``: registered models held in memory, requests scored
together in micro-batches, and a model swapped the moment its alias moves.

A request's texts join a queue per (model, alias); a batcher takes what is queued, and
while requests keep coming (the last batch held several) waits for as many requests as
the last batch held, at most ``window`` seconds after the first, up to ``max_rows``
texts. It scores them in one call off the event loop, so concurrent requests share the
model's batched kernels. A lone request waits for no one. Every answer names the version
that scored it, and none waits longer than ``deadline`` seconds (and at most a second more).

A watcher looks at the registry every ``poll`` seconds. When an alias points at another
version (``harvest model promote``), the new version is loaded in full first and only
then put in the old one's place, so a batch is scored by one whole model, never half of
one. A version that fails to load leaves the old one serving, and is logged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from training import pyfunc, registry
from training.apart import run_apart
from training.tracking import Store

if TYPE_CHECKING:
    from training.arrays import Floats

log = logging.getLogger(__name__)
MODEL_PREFIX = registry.model_name("")  # models `harvest train` registers, one a dataset
_threads: int | None = None  # torch's CPU threads as the service found them


@dataclass(frozen=True)
class Loaded:
    name: str
    alias: str
    version: int
    scorer: pyfunc.Scorer


@dataclass
class _Pending:
    texts: list[str]
    done: asyncio.Future[tuple[Loaded, Floats]]


@dataclass
class Predictor:
    store: Store
    device: str = "cpu"
    window: float = 0.005  # seconds a batch waits for more requests after its first
    max_rows: int = 512  # texts scored at once, at most
    poll: float = 2.0  # seconds between looks at the registry's aliases
    recheck: float = 60.0  # seconds at most between queries of an unchanged SQLite store
    deadline: float = 60.0  # seconds a request may wait for its batch to be scored
    default: str = ""  # the model a request that names none means (serve.model)
    models: dict[tuple[str, str], Loaded] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _queues: dict[tuple[str, str], asyncio.Queue[_Pending]] = field(default_factory=dict)
    # every request's deadline and answer, oldest first, for one sweeper to enforce: a
    # timer a request (asyncio.wait_for) took a twelfth of the event loop's time
    _open: deque[tuple[float, asyncio.Future[tuple[Loaded, Floats]]]] = field(default_factory=deque)
    _sweeper: asyncio.Task[None] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None
    _names: list[str] = field(default_factory=list)  # models `harvest train` registered
    # every batch scored on one thread: torch keeps a pool of worker threads for each
    # thread that calls it, and the idle pools of a changing caller spin on the same cores
    _scoring: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="scoring")
    )

    def start(self) -> None:
        """Loads the champion of every model `harvest train` registered, then watches."""
        if self.store.exists():
            for m in registry.list_models(self.store):
                if m["model"].startswith(MODEL_PREFIX) and registry.CHAMPION in m["aliases"]:
                    try:
                        self.get(m["model"], registry.CHAMPION)
                    except Exception as exc:  # the service still starts; asking says why
                        log.error("cannot load %s@champion: %s", m["model"], exc)
        self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._scoring.shutdown(wait=False, cancel_futures=True)
        if self._watcher is not None:
            self._watcher.join(timeout=10)

    def known_default(self) -> str | None:
        """The default model when it is known without asking the registry."""
        if self.default:
            return self.default
        names = self._names
        return str(names[0]) if names and len(names) == 1 else None

    def default_model(self) -> str:
        """The model a request that names none means: ``serve.model`` when set, else the
        only one `harvest train` registered (the registry is asked once it has one, and
        then by the watcher)."""
        from ingestion.errors import InvalidInputError, NotFoundError

        if self.default:
            return self.default
        names = self._names or self._registered()
        if not names:
            raise NotFoundError("no model to predict with: train one first (`harvest train`)")
        if len(names) > 1:
            raise InvalidInputError(
                f"several models: name one with ?model= ({', '.join(names)}), or set the "
                "default in harvest.toml ([serve] model = ...)"
            )
        return str(names[0])

    def _registered(self) -> list[str]:
        names = (
            sorted(
                m["model"]
                for m in registry.list_models(self.store)
                if m["model"].startswith(MODEL_PREFIX)
            )
            if self.store.exists()
            else []
        )
        self._names = names
        return names

    def get(self, name: str, alias: str) -> Loaded:
        """The model serving ``name@alias``, loaded on first use (a RegistryError, a 404,
        when there is no such model or alias)."""
        with self._lock:
            held = self.models.get((name, alias))
        if held is not None:
            return held
        loaded = self._load(name, alias)
        with self._lock:
            return self.models.setdefault((name, alias), loaded)

    def _load(self, name: str, alias: str) -> Loaded:
        mv = registry.by_alias(self.store, name, alias)
        # torch touched only by the scoring thread and threads that end (training/apart.py)
        scorer = run_apart(lambda: pyfunc.load_version(self.store, mv, self.device), "model-load")
        log.info("serving %s@%s: version %s", name, alias, mv.version)
        return Loaded(name, alias, int(mv.version), scorer)

    def _watch(self) -> None:
        # the registry's queries take the GIL for tens of milliseconds, which a MiniLM
        # forward pass on the scoring thread waits out between its ops: a SQLite store is
        # asked only when its files changed, and at least every ``recheck`` seconds
        seen: tuple[int, ...] | None = None  # the first look always asks
        asked = time.monotonic()
        while not self._stop.wait(self.poll):
            now = self.store.stamp()
            if now is not None and now == seen and time.monotonic() - asked < self.recheck:
                continue
            seen, asked = now, time.monotonic()
            try:
                self._registered()
            except Exception as exc:
                log.error("cannot list the registered models: %s", exc)
            with self._lock:
                keys = list(self.models)
            for name, alias in keys:
                try:
                    version = int(registry.by_alias(self.store, name, alias).version)
                    if version != self.models[(name, alias)].version:
                        fresh = self._load(name, alias)  # whole before it serves
                        with self._lock:
                            self.models[(name, alias)] = fresh
                except Exception as exc:  # the old version keeps serving
                    log.error("cannot refresh %s@%s: %s", name, alias, exc)

    async def predict(self, name: str, alias: str, texts: list[str]) -> tuple[Loaded, Floats]:
        """Scores ``texts`` with ``name@alias`` in the next micro-batch: the model that
        scored them, and their (texts, classes) probabilities in ``scorer.classes`` order."""
        key = (name, alias)
        if key not in self.models:  # loaded here; a missing model fails this request
            await asyncio.to_thread(self.get, name, alias)
        loop = asyncio.get_running_loop()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            loop.create_task(self._batches(key, queue))
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        done: asyncio.Future[tuple[Loaded, Floats]] = loop.create_future()
        self._open.append((loop.time() + self.deadline, done))
        queue.put_nowait(_Pending(texts, done))
        try:
            return await done
        except TimeoutError:  # set by the sweeper
            from ingestion.errors import UnavailableError

            raise UnavailableError(
                f"{name}@{alias} did not score within {self.deadline:g} s: try again later"
            ) from None

    async def _sweep(self) -> None:
        """Ends each request still unanswered at its deadline: within a second, or a tenth
        of a shorter deadline."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.deadline / 10))
            now = loop.time()
            # the same deadline for all: the oldest ends first
            while self._open and (self._open[0][1].done() or self._open[0][0] <= now):
                _, done = self._open.popleft()
                if not done.done():
                    done.set_exception(TimeoutError())

    async def _batches(self, key: tuple[str, str], queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        last = 1  # requests the last batch held: as many are likely on their way again
        while True:
            batch = [await queue.get()]
            rows = len(batch[0].texts)
            # alone, a request is scored at once; under load, a batch waits for as many
            # requests as the last one held, or ``window`` seconds: clients that each
            # send again once answered are all back well within the window
            until = loop.time() + self.window
            while rows < self.max_rows and (len(batch) < last or not queue.empty()):
                if not queue.empty():
                    item = queue.get_nowait()
                else:
                    left = until - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                batch.append(item)
                rows += len(item.texts)
            last = len(batch)
            texts = [t for item in batch for t in item.texts]
            try:
                with self._lock:
                    model = self.models[key]  # one version for the whole batch
                # probabilities, not the Scorer's DataFrame: a frame and its slices would
                # cost a lone n-gram request more than scoring it
                scored = await loop.run_in_executor(self._scoring, _score, model.scorer, texts)
            except Exception as exc:
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
                continue
            start = 0
            for item in batch:
                part = scored[start : start + len(item.texts)]
                start += len(item.texts)
                if not item.done.done():
                    item.done.set_result((model, part))


def _score(scorer: pyfunc.Scorer, texts: list[str]) -> Floats:
    """``scorer``'s probabilities of ``texts``, on the threads it scores best on."""
    import torch

    global _threads
    if _threads is None:
        _threads = torch.get_num_threads()  # torch's own choice, before any is set here
    want = scorer.threads or _threads
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)
    return scorer.proba(texts)
