"""``harvest demo``: every stage, for real, on the built-in demo site."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from harvest import stages
from harvest.config import Config
from harvest.crawl import run_crawl
from harvest.demosite import DemoSite, generate
from ingestion.datasets import cut_dataset
from ingestion.export import export_version
from ingestion.lake import Lake
from labeling.simulate import simulate
from training.trainer import TrainConfig

SOURCE = "demo"


def say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def run_demo(
    config: Config,
    workdir: Path,
    articles: int = 400,
    seed: int = 7,
    corpus: Path | None = None,
    epochs: int = 20,
) -> dict[str, Any]:
    started = time.monotonic()
    # the demo owns workdir and starts from an empty lake, so its figures add up every run
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    cfg = replace(config, lake=str(workdir / "lake"), reports=str(workdir / "reports"))
    recipe = stages.recipe(cfg, SOURCE)

    site = generate(articles, seed, corpus)
    server = stages.label_server(cfg)
    ours = cfg.studio_managed and not server.answers()
    with DemoSite(site) as demo_site:
        truth_path = workdir / "truth.json"
        truth = site.truth(demo_site.url)
        truth_path.write_text(json.dumps(truth, indent=1))
        say(f"demo site on {demo_site.url}: {len(site.articles)} article pages")
        if ours:
            say(f"starting Label Studio on {server.url} (first start migrates, ~1 min)")
            server.start()
        try:
            say("crawling")
            with stages.source_lock(cfg, stages.CRAWL_STAGE, recipe.name):
                crawled = run_crawl(cfg, recipe, start_url=demo_site.url + "/")
            say(f"crawled {crawled.items} items; curating")
            gate = stages.curate_source(cfg, recipe)
            say(
                f"curated {gate.curated}, quarantined {gate.quarantined}, dropped "
                f"{gate.duplicates_dropped} duplicates and {gate.near_duplicates_dropped} "
                f"near duplicates; report {gate.report}"
            )

            sync = stages.label_sync(cfg)
            title = stages.project_title(recipe.name)
            sync.delete_project(title)
            pushed = stages.push_source(cfg, recipe, sync)
            say(f"pushed {pushed.imported} tasks to Label Studio project {pushed.project_id}")
            labeled = simulate(sync, pushed.project_id, truth["classes"], None)  # type: ignore[arg-type]
            pulled = stages.pull_source(cfg, recipe, sync)
            say(f"simulated annotator labelled {labeled}; pulled {pulled.labels} labels")
        finally:
            if ours:
                server.stop()

    lake = Lake(cfg.lake)
    version = cut_dataset(lake, SOURCE, SOURCE, f"labels/{SOURCE}", recipe.text_field, seed=0)
    say(f"dataset {SOURCE} version {version.version}: {version.rows} rows; training")
    result = stages.train_dataset(
        cfg, lake, SOURCE, version.version, TrainConfig(epochs=epochs, seed=0)
    )
    export_dir = export_version(
        lake, SOURCE, workdir / "export" / f"{SOURCE}-v{version.version}"
    ).out
    say(f"model report in {result.report_dir}; dataset exported to {export_dir}")
    tracked = result.mlflow
    assert tracked is not None  # train_dataset records every run
    say(
        f"MLflow run {tracked.run_id} in {tracked.tracking_uri}; registered as "
        f"{tracked.model} version {tracked.model_version}"
    )
    return {
        "site_articles": len(site.articles),
        "planted_invalid": len(site.planted_invalid),
        "planted_duplicates": len(site.planted_duplicates),
        "planted_near_duplicates": len(site.planted_near_duplicates),
        "items_crawled": int(crawled.items),
        "curated": gate.curated,
        "quarantined": gate.quarantined,
        "duplicates_dropped": gate.duplicates_dropped,
        "near_duplicates_dropped": gate.near_duplicates_dropped,
        "labeled": int(pulled.labels),
        "dataset_version": version.version,
        "test_accuracy": round(result.test["accuracy"], 4),
        "test_macro_f1": round(result.test["macro_f1"], 4),
        "export_dir": str(export_dir),
        "registered_model": f"{tracked.model} v{tracked.model_version}",
        "seconds": round(time.monotonic() - started, 1),
    }
