"""Each stage of the flow as one call, shared by the command line and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest.config import Config
from ingestion.lake import Lake
from labeling.server import LabelStudioServer
from labeling.sync import LabelSync, PushResult
from spiders.recipe import Recipe, load_recipe
from validation.suite import BatchSpec, GateSpec, Rule

if TYPE_CHECKING:
    from validation.gate import CurateResult


def recipe(config: Config, source: str) -> Recipe:
    return load_recipe(source, config.sources)


def gate_spec(r: Recipe) -> GateSpec:
    return GateSpec(
        text_field=r.text_field,
        required=[n for n, f in r.fields.items() if f.required],
        dates={n: f.format for n, f in r.fields.items() if f.type == "date"},
        rules=[Rule(e.expect, e.column, e.min, e.max, e.format) for e in r.expectations],
        batch=BatchSpec(**vars(r.batch)) if r.batch else None,
        steps=r.steps,
    )


def curate_source(config: Config, r: Recipe, accept_batch: str | None = None) -> CurateResult:
    # Great Expectations takes seconds to import: only the commands that curate pay for it
    from validation.gate import curate

    return curate(Lake(config.lake), r.name, gate_spec(r), config.reports, accept_batch)


def project_title(source: str) -> str:
    return f"harvest {source}"


def label_server(config: Config) -> LabelStudioServer:
    return LabelStudioServer(
        executable=config.label_studio_executable,
        data_dir=Path(config.label_studio_data_dir),
        host=config.label_studio_host,
        port=config.label_studio_port,
        username=config.label_studio_username,
        password=config.label_studio_password,
        token=config.label_studio_token,
    )


def label_sync(config: Config) -> LabelSync:
    return LabelSync(config.label_studio_url, config.label_studio_token, Lake(config.lake))


def push_source(config: Config, r: Recipe, sync: LabelSync | None = None) -> PushResult:
    """Imports every curated row of ``r`` that the project does not have yet."""
    sync = sync or label_sync(config)
    lake = Lake(config.lake)
    project_id = sync.project(project_title(r.name), r.labels)
    table = f"curated/{r.name}"
    if not lake.exists(table):
        return PushResult(project_id, 0, 0)
    rows = lake.read(table, columns=["content_sha256", "url", r.text_field])
    tasks = (
        {"row_id": h, "url": u, "text": t}
        for h, u, t in zip(*(rows[c].to_pylist() for c in rows.column_names), strict=True)
    )
    return sync.push(project_id, tasks)


def pull_source(config: Config, r: Recipe, sync: LabelSync | None = None) -> dict[str, Any]:
    sync = sync or label_sync(config)
    project_id = sync.project(project_title(r.name), r.labels)
    rows, version = sync.pull(project_id, f"labels/{r.name}")
    return {"source": r.name, "project_id": project_id, "labels": rows, "version": version}
