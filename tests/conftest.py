"""Servers the tests need, started once per session on free loopback ports and stopped by pid.
Only fixtures and hooks: what tests import is in tests/helpers.py."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harvest.demosite import DemoSite, Site, generate
from labeling.server import LabelStudioServer
from spiders.render import CHROMIUM
from tests import proxies
from tests.helpers import ROOT, free_port

if TYPE_CHECKING:
    from tests.service import Live

DATASETS = ROOT.parent / "shared" / "datasets"
LABEL_STUDIO = ROOT / ".venv-labelstudio" / "bin" / "label-studio"
SITE_ARTICLES = 120

# A hung server or crawl fails its own test with a traceback instead of eating CI's time.
# pyproject.toml gives every test 300 s; a slow one gets this, which also covers the
# servers its fixtures start, Label Studio's first start (migrations) included.
SLOW_TIMEOUT = 1200

# The real servers, found as `make setup` installs them: marker -> (present?, remedy).
SERVERS = {
    "requires_label_studio": (
        lambda: LABEL_STUDIO.exists(),
        f"Label Studio is not installed at {LABEL_STUDIO}",
    ),
    "requires_chromium": (lambda: Path(CHROMIUM).exists(), f"{CHROMIUM} is absent"),
    "requires_redis": (lambda: shutil.which("redis-server") is not None, "no redis-server"),
    "requires_tinyproxy": (proxies.available, proxies.MISSING),
}
# Fixtures that start a server give their tests its marker, so none can be forgotten.
STARTED_BY = {
    "label_studio": "requires_label_studio",
    "browser_env": "requires_chromium",
    "rendered": "requires_chromium",
    "served": "requires_chromium",
    "redis_url": "requires_redis",
    "tinyproxies": "requires_tinyproxy",
}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in STARTED_BY.items():
            if fixture in names:
                item.add_marker(marker)
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


@pytest.hookimpl(tryfirst=True)  # before any fixture starts a server
def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, (present, missing) in SERVERS.items():
        if item.get_closest_marker(marker) and not present():
            if os.environ.get("CI"):
                # CI installs every server: a skip there would hide a broken install step
                pytest.fail(f"{missing}: `make setup` should have installed it", pytrace=False)
            pytest.skip(f"{missing}: run `make setup`, or deselect with -m 'not {marker}'")


@pytest.fixture(scope="session")
def site() -> Site:
    return generate(SITE_ARTICLES, seed=3)


@pytest.fixture(scope="session")
def demo_site(site: Site) -> Iterator[DemoSite]:
    with DemoSite(site) as server:
        yield server


@pytest.fixture
def lake_env(tmp_path: Path) -> dict[str, str]:
    return {
        "HARVEST_LAKE": str(tmp_path / "lake"),
        "HARVEST_REPORTS": str(tmp_path / "reports"),
    }


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    server = LabelStudioServer(
        executable=str(LABEL_STUDIO),
        data_dir=tmp_path_factory.mktemp("labelstudio"),
        port=free_port(),
        username="annotator@harvest.test",
        password=secrets.token_hex(8),
        token=secrets.token_hex(20),
    )
    server.start(timeout=600)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ag_news() -> Path:
    path = DATASETS / "ag_news_test.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared datasets are not on this machine")
    return path


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """A `harvest serve` of the test's own, stopped (and its crawls killed) afterwards."""
    from tests.service import Live

    service = Live(tmp_path)
    try:
        yield service
    finally:
        service.close()
