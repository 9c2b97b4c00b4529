"""Sync with a real Label Studio server, started for the test session."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from ingestion.lake import Lake
from labeling.server import LabelStudioServer
from labeling.simulate import simulate
from labeling.sync import LabelSync, SyncError, choice_result
from labeling.tasktypes import MULTI, SINGLE, SPANS, TaskType
from tests.helpers import free_port, labelling_env, last_json, run_harvest

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


def table(lake: Lake, name: str) -> list[dict[str, Any]]:
    if not lake.exists(name):
        return []
    return sorted(lake.read(name).to_pylist(), key=lambda r: (r["task_id"], r["annotation_id"]))


TEXT = "Alice met Bob in Paris."


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (SINGLE, "Sports"),
        (MULTI, ["Business", "Sci/Tech"]),
        (SPANS, [(0, 5, "World"), (10, 13, "World"), (17, 22, "Sports")]),
    ],
)
def test_each_task_type_round_trips(sync: LabelSync, kind: TaskType, value: Any) -> None:
    project = sync.project(f"type {kind.name}", CLASSES, kind.name)
    assert kind.matches(sync.client.projects.get(id=project).label_config or "")
    # a pre-annotation in the type's format is taken and reads back
    sync.client.projects.import_tasks(
        id=project,
        request=[
            {
                "data": {"row_id": "h0", "url": "http://site/0", "text": TEXT},
                "predictions": [kind.prediction(value, score=0.9, model_version="m", text=TEXT)],
            }
        ],
    )
    task_id = sync.task_row_ids(project)["h0"]
    predicted = sync.client.tasks.get(id=str(task_id)).predictions or []
    expected = kind.parse(kind.result(value, TEXT))
    assert [kind.parse(p.result) for p in predicted] == [expected]

    sync.client.annotations.create(id=task_id, result=kind.result(value, TEXT))
    assert sync.pull(project, "labels/types", kind) == (1, 0)
    (row,) = table(sync.lake, "labels/types")
    column = {"single": "label", "multi": "labels", "spans": "spans"}[kind.name]
    assert row[column] == expected
    assert row["label"] == (value if kind is SINGLE else None)
    (annotation,) = table(sync.lake, "annotations/types")
    assert (annotation["value"], annotation["row_id"]) == (expected, "h0")


def test_a_project_of_another_task_type_is_refused(sync: LabelSync) -> None:
    title = "kind refused"
    sync.project(title, CLASSES, "single")
    with pytest.raises(SyncError, match="is not labelled as 'multi', the recipe's label_type"):
        sync.project(title, CLASSES, "multi")


def test_pull_follows_updates_and_deletions(sync: LabelSync) -> None:
    project = sync.project("edit then pull", CLASSES)
    sync.push(project, rows(2))
    ids = sync.task_row_ids(project)
    first = sync.client.annotations.create(id=ids["h0"], result=choice_result("World"))
    second = sync.client.annotations.create(id=ids["h0"], result=choice_result("Sports"))
    other = sync.client.annotations.create(id=ids["h1"], result=choice_result("Business"))
    assert first.id and second.id and other.id

    def labels() -> dict[str, tuple[int, str]]:
        return {r["row_id"]: (r["annotation_id"], r["label"]) for r in table(sync.lake, "labels/e")}

    sync.pull(project, "labels/e")
    assert labels() == {"h0": (second.id, "Sports"), "h1": (other.id, "Business")}
    assert len(table(sync.lake, "annotations/e")) == 3
    sync.client.annotations.update(id=second.id, result=choice_result("Sci/Tech"))
    sync.pull(project, "labels/e")
    assert labels() == {"h0": (second.id, "Sci/Tech"), "h1": (other.id, "Business")}
    sync.client.annotations.delete(id=second.id)
    sync.client.annotations.delete(id=other.id)
    sync.pull(project, "labels/e")
    assert labels() == {"h0": (first.id, "World")}
    assert [r["annotation_id"] for r in table(sync.lake, "annotations/e")] == [first.id]


class Died(BaseException):
    """Stands for the process dying: nothing after it runs, no except Exception stops it."""


def test_an_interrupted_pull_repeated_loses_and_duplicates_nothing(
    sync: LabelSync,
    label_studio: LabelStudioServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    project = sync.project("interrupted pull", CLASSES)
    sync.push(project, rows(4))
    truth = {f"http://site/{i}": CLASSES[i % 4] for i in range(4)}
    simulate(sync, project, truth, 2)
    assert sync.pull(project, "labels/c") == (2, 0)
    before = {t: table(sync.lake, t) for t in ("labels/c", "annotations/c")}
    simulate(sync, project, truth, None)

    # dies after reading the export, before writing anything
    with monkeypatch.context() as m:
        m.setattr("labeling.store.LabelStore.replace", lambda *a: (_ for _ in ()).throw(Died()))
        with pytest.raises(Died):
            sync.pull(project, "labels/c")
    assert {t: table(sync.lake, t) for t in before} == before

    # dies between the two tables: annotations written, labels not
    written = []
    real = Lake.overwrite

    def overwrite_once(self: Lake, *args: Any, **kwargs: Any) -> int:
        if written:
            raise Died()
        written.append(args[0])
        return real(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Lake, "overwrite", overwrite_once)
        with pytest.raises(Died):
            sync.pull(project, "labels/c")
    assert written == ["annotations/c"]
    assert table(sync.lake, "labels/c") == before["labels/c"]

    # run again: the same tables as one clean pull, nothing twice, one new labels version
    assert sync.pull(project, "labels/c") == (4, 1)
    clean = LabelSync(label_studio.url, label_studio.token, Lake(tmp_path / "clean"))
    clean.pull(project, "labels/c")
    for name in ("labels/c", "annotations/c"):
        got = table(sync.lake, name)
        assert got == table(clean.lake, name)
        assert len({(r["task_id"], r["annotation_id"]) for r in got}) == len(got) == 4
    assert sync.pull(project, "labels/c") == (4, None)


class CuttingProxy:
    """Passes requests on to Label Studio, but sends only half of any export, then hangs up,
    as a server that goes away mid-export would."""

    def __init__(self, upstream: str):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                reply = requests.request(
                    self.command,
                    upstream + self.path,
                    data=self.rfile.read(length) if length else None,
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                    timeout=120,
                )
                body = reply.content
                self.send_response(reply.status_code)
                self.send_header("Content-Type", reply.headers.get("Content-Type", ""))
                if "/export" in self.path:
                    proxy.cut += 1
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = forward  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.cut = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_label_studio_going_away_mid_export_writes_nothing(
    sync: LabelSync, label_studio: LabelStudioServer
) -> None:
    project = sync.project("export cut short", CLASSES)
    sync.push(project, rows(30))
    simulate(sync, project, {f"http://site/{i}": CLASSES[i % 4] for i in range(30)}, None)
    with CuttingProxy(label_studio.url) as proxy:
        cut = LabelSync(proxy.url, label_studio.token, sync.lake)
        with pytest.raises(SyncError, match=f"Label Studio at {proxy.url} .*export"):
            cut.pull(project, "labels/away")
        assert proxy.cut == 1
    assert sync.lake.tables() == []
    assert sync.pull(project, "labels/away") == (30, 0)


@pytest.fixture
def cli_env(label_studio: LabelStudioServer, tmp_path: Path) -> dict[str, str]:
    env = labelling_env(tmp_path, "clipull", label_studio.token)
    return {**env, "HARVEST_LABEL_STUDIO_PORT": str(label_studio.port)}


def test_cli_pull_while_label_studio_is_down_fails_clearly_and_a_retry_works(
    sync: LabelSync, cli_env: dict[str, str]
) -> None:
    project = sync.project("harvest clipull", CLASSES)
    sync.push(project, rows(2))
    simulate(sync, project, {"http://site/0": "World", "http://site/1": "Sports"}, None)
    down = free_port()
    proc = run_harvest(
        ["label", "pull", "clipull"], {**cli_env, "HARVEST_LABEL_STUDIO_PORT": str(down)}, False
    )
    assert proc.returncode == 69  # unavailable: retry later (README: exit codes)
    assert f"Label Studio at http://127.0.0.1:{down} is unreachable (listing projects)" in (
        proc.stderr.replace("\n", " ")
    )
    assert not (Path(cli_env["HARVEST_LAKE"]) / "labels").exists()
    out = last_json(run_harvest(["label", "pull", "clipull"], cli_env).stdout)
    assert (out["project_id"], out["labels"], out["version"]) == (project, 2, 0)
    assert Lake(cli_env["HARVEST_LAKE"]).exists("annotations/clipull")
