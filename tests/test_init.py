"""`harvest init`, and harvest installed from a wheel, run from a folder outside the
checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from harvest.config import load_config
from harvest.demosite import DemoSite, generate
from ingestion.lake import Lake
from spiders.recipe import load_recipe
from tests.helpers import ROOT, last_json, run_harvest

# what pyproject.toml's package discovery includes
PACKAGES = ("harvest", "spiders", "ingestion", "validation", "labeling", "training")


def clean_env() -> dict[str, str]:
    """The environment without harvest's own variables: the folder's file decides."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HARVEST_")}


def test_init_writes_a_folder_whose_config_is_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    run_harvest(["init", str(folder)], {})
    cfg = load_config(folder / "harvest.toml", env={})
    assert Path(cfg.lake) == folder / "lake"
    assert Path(cfg.sources) == folder / "sources"
    assert load_recipe("demo", Path(cfg.sources)).name == "demo"
    # the same recipe the checkout's demo crawls
    assert (folder / "sources" / "demo.yaml").read_text() == (
        ROOT / "sources" / "demo.yaml"
    ).read_text()
    (folder / "sources" / "demo.yaml").write_text("name: mine\n")
    again = run_harvest(["init", str(folder)], {}, check=False)
    assert again.returncode == 78
    assert "already there: " in again.stderr
    assert str(folder / "sources" / "demo.yaml") in again.stderr
    assert (folder / "sources" / "demo.yaml").read_text() == "name: mine\n"  # kept
    run_harvest(["init", str(folder), "--force"], {})
    assert load_recipe("demo", folder / "sources").name == "demo"


def python(args: list[str], cwd: Path, path: Path, timeout: float = 300) -> Any:
    """``python ARGS`` in ``cwd`` with only ``path`` before the interpreter's own packages,
    as if harvest were installed there and nowhere else."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**clean_env(), "PYTHONPATH": str(path)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_an_installed_wheel_crawls_from_a_folder_of_its_own(tmp_path: Path) -> None:
    """The wheel `pip install .` would install, unpacked away from the checkout: init, then
    crawl the demo site from the folder init wrote."""
    # from a copy: a build writes build/ and *.egg-info/ into the tree it builds
    tree = tmp_path / "tree"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=skip)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, tree / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("harvest_lake-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(site)
    project = tmp_path / "project"
    project.mkdir()
    where = python(["-c", "import harvest; print(harvest.__file__)"], project, site)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    assert python(["-m", "harvest.cli", "init"], project, site).returncode == 0
    version = python(["-m", "harvest.cli", "--version"], project, site)
    assert version.stdout.strip() == "harvest 0.1.0", version.stderr
    with DemoSite(generate(12, seed=4)) as server:
        args = ["-m", "harvest.cli", "crawl", "demo", "--no-curate", "--start-url", server.url]
        crawled = python(args, project, site)
        assert crawled.returncode == 0, crawled.stderr
    assert last_json(crawled.stdout)["items"] == 12
    rows = Lake(str(project / "lake")).read("raw/demo", columns=["url"])
    assert rows.num_rows == 12
