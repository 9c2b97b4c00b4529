"""Sync with a real Label Studio server, started for the test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.lake import Lake
from labeling.server import LabelStudioServer
from labeling.simulate import simulate
from labeling.sync import LabelSync, SyncError, choice_result
from tests.conftest import free_port

pytestmark = pytest.mark.slow
CLASSES = ["World", "Sports", "Business", "Sci/Tech"]


def rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {"row_id": f"h{i}", "url": f"http://site/{i}", "text": f"article number {i}"}
        for i in range(start, start + n)
    ]


@pytest.fixture
def sync(label_studio: LabelStudioServer, tmp_path: Path) -> LabelSync:
    return LabelSync(label_studio.url, label_studio.token, Lake(tmp_path / "lake"))


def test_push_never_imports_a_row_twice(sync: LabelSync, request: pytest.FixtureRequest) -> None:
    project = sync.project(f"push {request.node.name}", CLASSES)
    assert sync.project(f"push {request.node.name}", CLASSES) == project  # reused
    first = sync.push(project, rows(5))
    assert (first.imported, first.skipped) == (5, 0)
    second = sync.push(project, rows(8))
    assert (second.imported, second.skipped) == (3, 5)
    assert sorted(sync.task_row_ids(project)) == sorted(r["row_id"] for r in rows(8))


def test_simulate_then_pull_is_idempotent(sync: LabelSync, request: pytest.FixtureRequest) -> None:
    project = sync.project(f"pull {request.node.name}", CLASSES)
    sync.push(project, rows(6))
    truth = {f"http://site/{i}": CLASSES[i % 4] for i in range(6)}
    assert simulate(sync, project, truth, 4) == 4
    count, version = sync.pull(project, "labels/t")
    assert (count, version) == (4, 0)
    assert sync.pull(project, "labels/t") == (4, None)  # nothing new, no new table version
    assert simulate(sync, project, truth, None) == 2
    count, version = sync.pull(project, "labels/t")
    assert (count, version) == (6, 1)
    labels = {r["url"]: r["label"] for r in sync.lake.read("labels/t").to_pylist()}
    assert labels == truth


def test_pull_takes_the_latest_annotation(sync: LabelSync, request: pytest.FixtureRequest) -> None:
    project = sync.project(f"latest {request.node.name}", CLASSES)
    sync.push(project, rows(1))
    task_id = sync.task_row_ids(project)["h0"]
    sync.client.annotations.create(id=task_id, result=choice_result("World"))
    sync.client.annotations.create(id=task_id, result=choice_result("Sports"))
    sync.pull(project, "labels/latest")
    assert [r["label"] for r in sync.lake.read("labels/latest").to_pylist()] == ["Sports"]


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sync = LabelSync(url, "token", Lake(tmp_path))
    with pytest.raises(SyncError, match=f"Label Studio at {url} is unreachable"):
        sync.project("anything", CLASSES)


def test_wrong_token_is_refused(label_studio: LabelStudioServer, tmp_path: Path) -> None:
    sync = LabelSync(label_studio.url, "not-the-token", Lake(tmp_path))
    with pytest.raises(SyncError, match="refused listing projects: 401"):
        sync.project("anything", CLASSES)


def test_server_refuses_to_start_twice_on_one_port(label_studio: LabelStudioServer) -> None:
    from labeling.server import LabelStudioError

    twin = LabelStudioServer(
        executable=label_studio.executable,
        data_dir=label_studio.data_dir,
        port=label_studio.port,
        username=label_studio.username,
        password=label_studio.password,
        token=label_studio.token,
    )
    with pytest.raises(LabelStudioError, match="already answers"):
        twin.start()
