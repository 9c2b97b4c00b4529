"""The service's HTTP API (FastAPI; the OpenAPI document is at /openapi.json).

Reads are open to whoever reaches the address (loopback by default); every route that
changes something needs ``Authorization: Bearer $HARVEST_API_TOKEN``. Bad input is a 4xx
with a message: bodies are pydantic models, and every project error (a HarvestError)
answers with its kind's status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from harvest.config import Config
from harvest.service import runlog
from harvest.service.auth import HostGuard, allowed_hosts, bearer
from harvest.service.cancel import ANSWER_WAIT, NotCancellableError, check_cancellable
from harvest.service.logs import AccessLog
from harvest.service.predictroute import PredictRequest, PredictResponse, PredictRoute, answer
from harvest.service.runs import STATUSES, RunStore
from harvest.service.webhooks import UNAUTHORIZED, BodyTooLargeError, Webhooks, read_body
from ingestion.errors import HarvestError
from ingestion.runs import ACTIVE

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from harvest.service.predict import Predictor
    from harvest.service.predictlog import PredictionLog
    from ingestion.lake import Lake

log = logging.getLogger(__name__)
NAME = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,99}$"
COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
MAX_WEBHOOK_BODY = 16 * 1024 * 1024
Name = Annotated[str, Field(pattern=NAME, description="a source, dataset or model name")]
RunId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
RunStatus = Literal[
    "queued", "running", "finished", "failed", "interrupted", "timed_out", "cancelled"
]
assert set(RunStatus.__args__) == set(STATUSES)  # type: ignore[attr-defined]


class Service(Protocol):
    """What the API needs of the running service (harvest.service.serve.Service)."""

    config: Config
    url: str
    store: RunStore
    token: str
    webhooks: Webhooks

    def trigger(self, source: str) -> dict[str, Any]: ...
    def cancel(self, run_id: int, wait: float) -> bool: ...
    def next_runs(self) -> dict[str, str | None]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, query or path, then the field")
    msg: str
    type: str


class Message(BaseModel):
    detail: str
    # never the input itself: an answer must not hand back what a client sent
    errors: list[FieldError] | None = Field(None, description="what failed validation")


class CrawlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Name


class Counts(BaseModel):
    requests: int | None = None
    items: int | None = None
    curated: int | None = None
    quarantined: int | None = None
    bans: int | None = None


class Run(BaseModel):
    id: int
    source: str
    trigger: Literal["schedule", "manual", "drift", "cli"]
    status: RunStatus
    created_at: str
    started_at: str | None
    ended_at: str | None
    counts: Counts
    log_path: str | None
    error: str | None
    pid: int | None = None
    progress: dict[str, int] | None = None
    attempt: int = Field(1, description="the try of a scheduled run: 2 and on are retries")
    retry_of: int | None = Field(None, description="the first try, for a retry")
    report: str | None = Field(None, description="the validation report of its curate")


class DatasetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    sources: list[Name] = Field(min_length=1, max_length=50)
    labels: Name = Field(description="labels/<PROJECT> to join by row id, e.g. a source")
    split: str = Field("0.8/0.1/0.1", pattern=r"^[0-9.]{1,10}(/[0-9.]{1,10}){2}$")
    stratify: bool = True
    group: str | None = Field("dup_group", pattern=COLUMN)
    time_split: str | None = Field(None, pattern=COLUMN)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Name
    version: int | None = Field(None, ge=0, le=2**31 - 1)
    format: Literal["parquet", "jsonl"] = "parquet"
    shards: int | None = Field(None, ge=1, le=1000)


def serving_app(service: Service) -> ASGIApp:
    """What ``harvest serve`` runs: the access log, the Host header checked, then a
    well-formed ``POST /predict`` answered before FastAPI's own layers (its error,
    telemetry and body limit middleware cost a one-text request more than scoring it), then
    the app."""
    app = create_app(service)
    hosts = allowed_hosts(service.config.allowed_hosts, urlsplit(service.url).hostname)
    fast = PredictRoute(app, app.state.predictor, app.state.predictions, service.token, NAME)
    return AccessLog(HostGuard(fast, hosts))


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        await asyncio.to_thread(predictor.start)
        predictions.start()
        try:
            yield
        finally:
            predictor.stop()
            predictions.stop()
            service.stop()

    app = FastAPI(
        title="harvest",
        summary="Scheduled crawls, run history, datasets, labelling progress and models.",
        version="0.1.0",
        lifespan=lifespan,
        # every route's bad input is answered with a message (the handlers below)
        responses={422: {"model": Message, "description": "invalid request"}},
    )
    cfg = service.config
    predictor, predictions = _predictor(cfg)
    auth = [Depends(bearer(service.token))]
    errors: dict[int | str, dict[str, Any]] = {400: {"model": Message}, 401: {"model": Message}}
    webhooks = service.webhooks
    add_error_handlers(app)
    app.state.predictor, app.state.predictions = predictor, predictions

    @app.post(
        "/crawls",
        status_code=202,
        dependencies=auth,
        tags=["runs"],
        responses={**errors, 404: {"model": Message}, 409: {"model": Message}},
    )
    def start_crawl(body: CrawlRequest) -> Run:
        """Starts a run of SOURCE now: its crawl, curation and the recipe's label steps."""
        from harvest.recipe import find_recipe, load_recipe

        find_recipe(body.source, cfg.sources)  # RecipeError: unknown, 404
        load_recipe(body.source, cfg.sources)  # RecipeError: broken, 422
        return Run(**service.trigger(body.source))

    @app.post(
        "/predict",
        dependencies=auth,
        tags=["models"],
        response_model=PredictResponse,
        responses={**errors, 404: {"model": Message}},
    )
    async def predict(
        body: PredictRequest,
        model: Annotated[str | None, Query(pattern=NAME)] = None,
        alias: Annotated[str, Query(pattern=NAME)] = "champion",
    ) -> Response:
        """Scores one text or a batch with a registered model (the only one `harvest train`
        registered, unless ``model`` names another) at ``alias``."""
        out = await answer(
            predictor, predictions, model, alias, body.all_texts(), time.perf_counter()
        )
        return Response(out, media_type="application/json")

    @app.get("/runs", tags=["runs"])
    def list_runs(
        source: Annotated[str | None, Query(pattern=NAME)] = None,
        status: RunStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[Run]:
        """Runs, newest first."""
        return [Run(**r) for r in service.store.list(limit, source, status)]

    @app.get("/runs/{run_id}", tags=["runs"], responses={404: {"model": Message}})
    def get_run(run_id: RunId) -> Run:
        run = service.store.get(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        return Run(**run)

    @app.post(
        "/runs/{run_id}/cancel",
        dependencies=auth,
        tags=["runs"],
        response_model=Run,
        responses={**errors, 202: {"model": Run}, 404: {"model": Message}, 409: {"model": Message}},
    )
    async def cancel_run(run_id: RunId) -> JSONResponse:
        """Stops a queued or running run: its step's process group gets SIGTERM (a crawl
        commits the batch in hand), then SIGKILL after the grace; the run ends cancelled.
        200 with the run once ended, 202 while it is still stopping."""
        run = await asyncio.to_thread(service.store.get, run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        check_cancellable(run)
        if not await asyncio.to_thread(service.cancel, run_id, ANSWER_WAIT):
            run = await asyncio.to_thread(service.store.get, run_id)
            assert run is not None
            check_cancellable(run)  # it ended meanwhile
            raise NotCancellableError(f"run {run_id} is not one this service started")
        run = await asyncio.to_thread(service.store.get, run_id)
        assert run is not None
        status = 202 if run["status"] in ACTIVE else 200
        return JSONResponse(Run(**run).model_dump(), status_code=status)

    @app.get(
        "/runs/{run_id}/log",
        tags=["runs"],
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/plain": {}}, "description": "the log"},
            404: {"model": Message},
        },
    )
    async def run_log(
        run_id: RunId,
        tail: Annotated[int | None, Query(ge=0, le=runlog.MAX_TAIL)] = None,
        follow: bool = False,
        idle: Annotated[float, Query(gt=0, le=3600)] = 120.0,
        timeout: Annotated[float, Query(gt=0, le=86400)] = 3600.0,
    ) -> StreamingResponse:
        """The run's log (what its steps printed): whole, or its last ``tail`` lines; with
        ``follow``, streamed as it grows until the run ends, ``idle`` seconds pass without
        output, or ``timeout`` seconds pass."""
        run = await asyncio.to_thread(service.store.get, run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        if not follow and not (run["log_path"] and Path(run["log_path"]).exists()):
            raise HTTPException(404, f"run {run_id} has no log (yet)")

        async def current() -> dict[str, Any] | None:
            return await asyncio.to_thread(service.store.get, run_id)

        return StreamingResponse(
            runlog.stream(current, tail, follow, idle, timeout),
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    @app.get(
        "/runs/{run_id}/report",
        tags=["runs"],
        response_class=FileResponse,
        responses={
            200: {"content": {"text/html": {}}, "description": "the report"},
            404: {"model": Message},
        },
    )
    def run_report(run_id: RunId) -> FileResponse:
        """The validation report the run's curate wrote."""
        run = service.store.get(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        report = Path(run["report"]) if run["report"] else None
        if report is None or not report.is_file():
            raise HTTPException(404, f"run {run_id} has no report")
        # only a file under the reports folder, whatever the history says
        if not report.resolve().is_relative_to(Path(cfg.reports).resolve()):
            raise HTTPException(404, f"run {run_id} has no report")
        return FileResponse(report, headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/sources", tags=["sources"])
    def list_sources() -> list[dict[str, Any]]:
        """Every recipe with its schedule, next scheduled run and last run."""
        from harvest.recipe import RecipeError, list_recipes, load_recipe

        next_runs = service.next_runs()
        out = []
        for path in list_recipes(cfg.sources):
            entry: dict[str, Any] = {"source": path.stem, "schedule": None, "error": None}
            try:
                r = load_recipe(path)
                entry["name"] = r.name
                entry["schedule"] = r.schedule.as_json() if r.schedule else None
            except RecipeError as exc:
                entry["error"] = str(exc)
            entry["next_run"] = next_runs.get(path.stem)
            last = service.store.list(1, path.stem)
            entry["last_run"] = last[0] if last else None
            out.append(entry)
        return out

    @app.get("/datasets", tags=["datasets"])
    def list_datasets() -> list[dict[str, Any]]:
        """Every dataset with its newest version."""
        from ingestion.lake import Lake

        lake = Lake(cfg.lake)
        out = []
        for table in sorted(t for t in lake.tables() if t.startswith("datasets/")):
            name = table.split("/", 1)[1]
            versions = _versions(lake, name)
            out.append(
                {
                    "dataset": name,
                    "versions": len(versions),
                    "latest": versions[-1] if versions else None,
                }
            )
        return out

    @app.get("/datasets/{name}", tags=["datasets"], responses={404: {"model": Message}})
    def get_dataset(name: Annotated[str, PathParam(pattern=NAME)]) -> dict[str, Any]:
        """A dataset's versions, oldest first, each with its lineage."""
        from ingestion.lake import Lake

        lake = Lake(cfg.lake)
        if not lake.exists(f"datasets/{name}"):
            raise HTTPException(404, f"no dataset {name!r}")
        return {"dataset": name, "versions": _versions(lake, name)}

    @app.post(
        "/datasets",
        status_code=201,
        dependencies=auth,
        tags=["datasets"],
        responses={**errors, 404: {"model": Message}, 409: {"model": Message}},
    )
    def create_dataset(body: DatasetRequest) -> dict[str, Any]:
        """Cuts a new version of a dataset (as `harvest dataset create`)."""
        from harvest import stages
        from harvest.recipe import find_recipe
        from ingestion.split import SplitRules, parse_fractions

        for source in body.sources:
            find_recipe(source, cfg.sources)
        rules = SplitRules(body.stratify, body.group, body.time_split)
        cut = stages.create_dataset(
            cfg, body.name, body.sources, body.labels, parse_fractions(body.split), rules, body.seed
        )
        return cut.to_dict()

    @app.post(
        "/exports",
        status_code=201,
        dependencies=auth,
        tags=["datasets"],
        responses={**errors, 404: {"model": Message}, 409: {"model": Message}},
    )
    def start_export(body: ExportRequest) -> dict[str, Any]:
        """Writes a dataset version with its card and manifest under REPORTS/exports/."""
        from harvest import stages
        from ingestion.datasets import dataset_versions
        from ingestion.lake import Lake

        lake = Lake(cfg.lake)
        if not lake.exists(f"datasets/{body.dataset}"):
            raise HTTPException(404, f"no dataset {body.dataset!r}")
        known = [v for v, _ in dataset_versions(lake, body.dataset)]
        version = body.version if body.version is not None else (known[-1] if known else None)
        if version is None or version not in known:
            raise HTTPException(
                404, f"dataset {body.dataset!r} has no version {body.version} (versions: {known})"
            )
        out = Path(cfg.reports) / "exports" / body.dataset / f"v{version}-{body.format}"
        return stages.export_dataset(cfg, body.dataset, out, version, body.format, body.shards)

    @app.get("/labels/{source}", tags=["labels"], responses={404: {"model": Message}})
    def labelling(source: Annotated[str, PathParam(pattern=NAME)]) -> dict[str, Any]:
        """Labelling progress of SOURCE: labelled rows of its curated rows, per class (what
        one count is depends on the task type: see classes_count) and per annotator."""
        from harvest import stages
        from ingestion.lake import Lake
        from labeling.progress import read_progress

        recipe = stages.recipe(cfg, source)
        progress = read_progress(Lake(cfg.lake), recipe.name, recipe.label_type, recipe.labels)
        return {"source": recipe.name, **progress}

    @app.get("/models", tags=["models"])
    def list_models() -> list[dict[str, Any]]:
        """Registered models with their versions and aliases."""
        from harvest import stages
        from training import registry

        store = stages.tracking_store(cfg)
        return registry.list_models(store) if store.exists() else []

    @app.get("/models/{name}", tags=["models"], responses={404: {"model": Message}})
    def get_model(
        name: Annotated[str, PathParam(pattern=NAME)],
        version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    ) -> dict[str, Any]:
        """The champion (or VERSION) of a registered model, with its run's metrics."""
        from harvest import stages
        from training import registry

        store = stages.tracking_store(cfg)
        if not store.exists():
            raise HTTPException(404, f"no registered model {name!r}: nothing was tracked yet")
        return registry.show(store, name, version)

    # the body is read raw, after the secret and within the limit (webhooks.read_body)
    event = {"content": {"application/json": {"schema": {"type": "object"}}}, "required": True}

    @app.post(
        "/webhooks/label-studio",
        tags=["labels"],
        openapi_extra={"requestBody": event},
        responses={**errors, 404: {"model": Message}, 413: {"model": Message}},
    )
    async def label_studio_webhook(request: Request) -> JSONResponse:
        """Label Studio's annotation events; needs the shared webhook secret
        (Authorization: Bearer $HARVEST_WEBHOOK_SECRET), not the API token. Bodies over
        16 MiB are refused (413)."""
        if not webhooks.authorized(request.headers):
            return JSONResponse({"detail": UNAUTHORIZED}, status_code=401)
        try:
            body = await read_body(request, MAX_WEBHOOK_BODY)
        except BodyTooLargeError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=413)
        from starlette.concurrency import run_in_threadpool

        status, answer = await run_in_threadpool(webhooks.handle, dict(request.headers), body)
        if "error" in answer:
            answer = {"detail": answer["error"]}
        return JSONResponse(answer, status_code=status)

    _dashboard(app, service)
    return app


def _versions(lake: Lake, name: str) -> list[dict[str, Any]]:
    """The versions of ``datasets/<name>``, oldest first. A cut's lineage records its rows
    per split, not their total nor when it was made: those come from the counts and from
    the version's commit."""
    from datetime import UTC, datetime

    from ingestion.datasets import dataset_versions

    when = {int(e["version"]): e.get("timestamp") for e in lake.table(f"datasets/{name}").history()}
    out = []
    for version, lineage in dataset_versions(lake, name):
        keep = {k: lineage.get(k) for k in ("counts", "tables", "split", "content_sha256")}
        counts = lineage.get("counts")
        rows = lineage.get("rows", sum(counts.values()) if isinstance(counts, dict) else None)
        stamp = when.get(version)
        created = lineage.get("created") or (
            datetime.fromtimestamp(stamp / 1000, UTC).isoformat() if stamp is not None else None
        )
        out.append({"version": version, "rows": rows, **keep, "created": created})
    return out


def _predictor(cfg: Config) -> tuple[Predictor, PredictionLog]:
    from harvest.monitor import Profiles
    from harvest.service.predict import Predictor
    from harvest.service.predictlog import PredictionLog
    from ingestion.lake import Lake
    from training.tracking import Store
    from training.trainer import pick_device

    store = Store(cfg.tracking)
    log = PredictionLog(
        Lake(cfg.lake), cfg.serve_log_sample, cfg.serve_log_text, profiles=Profiles(cfg, store)
    )
    return Predictor(store, device=pick_device("auto"), default=cfg.serve_model), log


def add_error_handlers(app: FastAPI) -> None:
    """Every project error answers with its kind's status and its message (see
    ingestion/errors.py); a request that fails validation, 422 with each field's problem."""
    from fastapi.exceptions import RequestValidationError

    app.add_exception_handler(HarvestError, harvest_error)
    app.add_exception_handler(RequestValidationError, _validation)


async def harvest_error(request: Request, exc: Exception) -> JSONResponse:
    status = exc.http_status if isinstance(exc, HarvestError) else 500
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    errors = [
        FieldError(loc=list(e.get("loc", ())), msg=str(e.get("msg")), type=str(e.get("type")))
        for e in getattr(exc, "errors", list)()
    ]
    text = "; ".join(f"{'.'.join(str(p) for p in e.loc)}: {e.msg}" for e in errors)
    return JSONResponse(
        {"detail": text or "invalid request", "errors": [e.model_dump() for e in errors]},
        status_code=422,
    )


def _dashboard(app: FastAPI, service: Service) -> None:
    """The dashboard at / and its data at /api/summary, where that module is installed."""
    try:
        from harvest.service import dashboard, summary
    except ImportError:
        log.info("no dashboard module: / and /api/summary are not served")
        return

    def build() -> dict[str, Any]:
        return summary.build(service.config, service.store, service.next_runs())

    @app.get("/api/summary", tags=["dashboard"])
    def api_summary() -> dict[str, Any]:
        """What the dashboard and `harvest status` show."""
        return build()

    @app.get("/", response_class=HTMLResponse, tags=["dashboard"])
    def page() -> HTMLResponse:
        return HTMLResponse(dashboard.page(build()))
