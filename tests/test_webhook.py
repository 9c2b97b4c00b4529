"""The webhook receiver, the lake writes it makes, and debounced retraining."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pytest
import requests
import yaml

from ingestion.lake import Lake
from labeling.retrain import Debouncer
from labeling.server import LabelStudioServer
from labeling.store import LabelStore
from labeling.sync import LabelSync, choice_result
from labeling.tasktypes import MULTI, SINGLE
from labeling.webhook import ACTIONS, Receiver, Route, WebhookServer, register, serve
from tests.helpers import ROOT, free_port

SECRET = "webhook-secret-for-tests"
AUTH = {"Authorization": f"Bearer {SECRET}"}
PROJECT = 7
CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
T = TypeVar("T")


def event(
    action: str,
    annotation_id: int = 1,
    task_id: int = 10,
    result: Any = None,
    updated: str = "2026-01-01T10:00:00.000000Z",
    project: int = PROJECT,
    cancelled: bool = False,
) -> dict[str, Any]:
    """A webhook body shaped like Label Studio's (send_payload on)."""
    if action == "ANNOTATIONS_DELETED":
        return {
            "action": action,
            "annotations": [{"id": annotation_id}],
            "project": {"id": project},
        }
    return {
        "action": action,
        "annotation": {
            "id": annotation_id,
            "task": task_id,
            "project": project,
            "result": choice_result("World") if result is None else result,
            "completed_by": 1,
            "was_cancelled": cancelled,
            "updated_at": updated,
        },
        "task": {"id": task_id, "data": {"row_id": f"h{task_id}", "url": f"http://site/{task_id}"}},
        "project": {"id": project, "title": "harvest s"},
    }


def send(receiver: Receiver, body: Any, headers: Mapping[str, str] = AUTH) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return receiver.handle(headers, raw)


def rows(lake: Lake, table: str) -> list[dict[str, Any]]:
    if not lake.exists(table):
        return []
    return sorted(lake.read(table).to_pylist(), key=lambda r: (r["task_id"], r["annotation_id"]))


def wait_for(what: str, probe: Callable[[], T], timeout: float = 60.0) -> T:
    """Polls ``probe`` until it gives something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


@pytest.fixture
def receiver(lake: Lake) -> Receiver:
    return Receiver(SECRET, {PROJECT: Route("s", LabelStore.for_source(lake, "s", SINGLE))})


# -- the receiver, without Label Studio ------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": SECRET},
        {"Authorization": f"Bearer {SECRET}x"},
        {"Authorization": f"Token {SECRET}"},
    ],
)
def test_a_wrong_or_missing_secret_is_refused_and_records_nothing(
    receiver: Receiver, lake: Lake, headers: dict[str, str]
) -> None:
    status, answer = send(receiver, event("ANNOTATION_CREATED"), headers)
    assert status == 401
    assert "secret" in answer["error"]
    assert lake.tables() == []


def test_the_secret_header_name_is_case_insensitive(receiver: Receiver, lake: Lake) -> None:
    status, _ = send(receiver, event("ANNOTATION_CREATED"), {"authorization": f"Bearer {SECRET}"})
    assert status == 200
    assert [r["label"] for r in rows(lake, "labels/s")] == ["World"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b'{"action": ' + b"1" * 5000 + b"}", "not JSON"),
        ([1, 2], "not a JSON object"),
        ({"project": {"id": PROJECT}}, "unknown action None"),
        ({**event("ANNOTATION_CREATED"), "action": "PROJECT_CREATED"}, "unknown action"),
        ({**event("ANNOTATION_CREATED"), "project": None, "annotation": {}}, "no project id"),
        ({**event("ANNOTATION_CREATED"), "annotation": {"id": "abc"}}, "annotation with an id"),
        ({**event("ANNOTATION_UPDATED"), "task": {"data": {}}}, "no task"),
        ({**event("ANNOTATION_CREATED"), "task": {"id": 1, "data": [1]}}, "not an object"),
        ({"action": "ANNOTATIONS_DELETED", "project": {"id": PROJECT}}, "list of annotations"),
        ({**event("ANNOTATIONS_DELETED"), "annotations": [{"id": "x"}]}, "integer id"),
    ],
)
def test_malformed_events_are_400_with_a_message(
    receiver: Receiver, lake: Lake, body: Any, words: str
) -> None:
    status, answer = send(receiver, body)
    assert status == 400
    assert words in answer["error"]
    assert lake.tables() == []


def test_an_event_of_another_project_is_not_recorded(receiver: Receiver, lake: Lake) -> None:
    status, answer = send(receiver, event("ANNOTATION_CREATED", project=99))
    assert status == 404
    assert "project 99" in answer["error"]
    assert lake.tables() == []


def test_events_keep_labels_and_annotations_in_step(receiver: Receiver, lake: Lake) -> None:
    def labels() -> list[tuple[int, int, str]]:
        return [(r["task_id"], r["annotation_id"], r["label"]) for r in rows(lake, "labels/s")]

    created = send(receiver, event("ANNOTATION_CREATED", 1, result=choice_result("World")))
    assert created == (
        200,
        {"source": "s", "action": "ANNOTATION_CREATED", "annotation_id": 1, "live": True},
    )
    later = "2026-01-01T10:05:00+00:00"  # the same instant may be written either way
    newest = "2026-01-01T11:00:00Z"
    send(receiver, event("ANNOTATION_CREATED", 2, result=choice_result("Sports"), updated=later))
    send(receiver, event("ANNOTATION_CREATED", 3, task_id=11, result=choice_result("Sci/Tech")))
    assert labels() == [(10, 2, "Sports"), (11, 3, "Sci/Tech")]
    assert [r["annotation_id"] for r in rows(lake, "annotations/s")] == [1, 2, 3]

    send(receiver, event("ANNOTATION_UPDATED", 2, result=choice_result("Business"), updated=newest))
    assert labels() == [(10, 2, "Business"), (11, 3, "Sci/Tech")]
    # an update that arrives late, after a newer one, changes nothing
    send(receiver, event("ANNOTATION_UPDATED", 2, result=choice_result("Sports"), updated=later))
    assert labels() == [(10, 2, "Business"), (11, 3, "Sci/Tech")]
    # the same event twice records it once
    send(receiver, event("ANNOTATION_UPDATED", 2, result=choice_result("Business"), updated=newest))
    assert len(rows(lake, "annotations/s")) == 3

    status, answer = send(receiver, event("ANNOTATIONS_DELETED", 2))
    assert (status, answer["deleted"]) == (200, 1)
    assert labels() == [(10, 1, "World"), (11, 3, "Sci/Tech")]  # the one before comes back
    # skipping a task takes its annotation out like a deletion
    send(receiver, event("ANNOTATION_UPDATED", 3, task_id=11, cancelled=True, updated=later))
    assert labels() == [(10, 1, "World")]
    send(receiver, event("ANNOTATIONS_DELETED", 1))
    assert labels() == [] and rows(lake, "annotations/s") == []
    assert send(receiver, event("ANNOTATIONS_DELETED", 1))[1]["deleted"] == 0  # again: no-op


def test_multi_label_events_store_the_set(lake: Lake) -> None:
    receiver = Receiver(SECRET, {PROJECT: Route("m", LabelStore.for_source(lake, "m", MULTI))})
    send(receiver, event("ANNOTATION_CREATED", 5, result=MULTI.result(["Sports", "Business"])))
    (row,) = rows(lake, "labels/m")
    assert (row["label"], row["labels"]) == (None, ["Business", "Sports"])
    assert rows(lake, "annotations/m")[0]["value"] == ["Business", "Sports"]


def test_the_http_server_answers_what_handle_says(receiver: Receiver, lake: Lake) -> None:
    with WebhookServer(receiver) as server:
        good = requests.post(server.url, json=event("ANNOTATION_CREATED"), headers=AUTH, timeout=30)
        assert good.status_code == 200 and good.json()["live"] is True
        wrong = requests.post(server.url, json=event("ANNOTATION_CREATED", 2), timeout=30)
        assert wrong.status_code == 401
        broken = requests.post(server.url, data=b"{", headers=AUTH, timeout=30)
        assert broken.status_code == 400 and "not JSON" in broken.json()["error"]
        elsewhere = requests.post(server.url + "x", json={}, headers=AUTH, timeout=30)
        assert elsewhere.status_code == 404
        assert requests.get(server.url, timeout=30).json() == {"ok": True, "sources": ["s"]}
    assert [r["annotation_id"] for r in rows(lake, "annotations/s")] == [1]


def test_labels_that_arrive_count_toward_a_retrain(lake: Lake) -> None:
    retrained: list[str] = []
    jobs: list[Callable[[], None]] = []
    debouncer = Debouncer(retrained.append, k=2, minutes=10, clock=lambda: 0.0, start=jobs.append)
    store = LabelStore.for_source(lake, "s", SINGLE)
    receiver = Receiver(SECRET, {PROJECT: Route("s", store)}, debouncer)
    send(receiver, event("ANNOTATION_CREATED", 1))
    send(receiver, event("ANNOTATIONS_DELETED", 1))  # a deletion is no new label
    assert jobs == []
    send(receiver, event("ANNOTATION_CREATED", 2))
    assert len(jobs) == 1
    jobs.pop()()
    assert retrained == ["s"]


# -- debounced retraining, on a clock the test moves -----------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def debouncer(
    clock: Clock, k: int = 3, minutes: float = 10, fail: bool = False
) -> tuple[Debouncer, list[str], list[Callable[[], None]]]:
    """A debouncer whose jobs wait in a list until the test runs them."""
    retrained: list[str] = []
    jobs: list[Callable[[], None]] = []

    def retrain(source: str) -> None:
        retrained.append(source)
        if fail:
            raise RuntimeError("the model would not train")

    return Debouncer(retrain, k, minutes, clock, jobs.append), retrained, jobs


def test_retrain_after_k_labels_and_not_before(clock: Clock) -> None:
    d, retrained, jobs = debouncer(clock, k=3)
    assert d.add("s") is None and d.add("s") is None
    assert jobs == [] and d.pending("s") == 2
    assert d.add("s") == "s"
    assert len(jobs) == 1 and d.pending("s") == 0
    jobs.pop()()
    assert retrained == ["s"] and d.running is None
    d.add("s")
    assert jobs == []  # the count starts again


def test_retrain_after_t_minutes_with_fewer_labels(clock: Clock) -> None:
    d, retrained, jobs = debouncer(clock, k=100, minutes=10)
    d.add("s")
    clock.now = 300.0
    d.add("s")  # T counts from the first label not trained on, not the last
    clock.now = 599.0
    assert d.tick() is None and jobs == []
    clock.now = 600.0
    assert d.tick() == "s"
    jobs.pop()()
    assert retrained == ["s"]
    clock.now = 5000.0
    assert d.tick() is None  # no label waiting, nothing to do


def test_retrains_never_overlap_and_labels_during_one_wait_for_the_next(clock: Clock) -> None:
    d, retrained, jobs = debouncer(clock, k=2)
    d.add("s", 2)
    assert len(jobs) == 1 and d.running == "s"
    d.add("s", 5)
    d.add("t", 2)
    clock.now = 10_000.0
    assert d.tick() is None
    assert len(jobs) == 1  # still the first one alone
    assert d.pending("s") == 5 and d.pending("t") == 2
    jobs.pop()()  # its end starts the next one: "s" waited longest
    assert retrained == ["s"] and len(jobs) == 1 and d.running == "s"
    assert d.pending("s") == 0
    jobs.pop()()
    assert len(jobs) == 1 and d.running == "t"
    jobs.pop()()
    assert retrained == ["s", "s", "t"] and jobs == [] and d.running is None


def test_a_failed_retrain_keeps_its_labels_and_waits_before_trying_again(clock: Clock) -> None:
    d, retrained, jobs = debouncer(clock, k=2, minutes=10, fail=True)
    d.add("s", 2)
    jobs.pop()()
    assert retrained == ["s"] and d.running is None
    assert d.pending("s") == 2  # not trained on
    d.add("s")
    assert jobs == []  # not again on the next label
    clock.now = 600.0
    assert d.tick() == "s"


def test_debouncer_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="k is"):
        Debouncer(print, k=0)
    with pytest.raises(ValueError, match="minutes"):
        Debouncer(print, minutes=0)


# -- with a real Label Studio --------------------------------------------------------


class Recording(Receiver):
    """A receiver that keeps the status of every request it answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered: list[tuple[int, Any]] = []

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        answer = super().handle(headers, body)
        self.answered.append(answer)
        return answer


@pytest.fixture
def sync(label_studio: LabelStudioServer, lake: Lake) -> LabelSync:
    return LabelSync(label_studio.url, label_studio.token, lake)


@pytest.fixture
def project(sync: LabelSync, request: pytest.FixtureRequest) -> int:
    project_id = sync.project(f"webhook {request.node.name}"[:50], CLASSES)
    sync.push(
        project_id,
        [{"row_id": f"h{i}", "url": f"http://site/{i}", "text": f"article {i}"} for i in range(3)],
    )
    return project_id


@pytest.fixture
def receiving(sync: LabelSync, project: int) -> Iterator[tuple[Recording, WebhookServer]]:
    store = LabelStore.for_source(sync.lake, "s", SINGLE, {"project_id": project})
    receiver = Recording(SECRET, {project: Route("s", store)})
    server = serve(receiver)
    try:
        yield receiver, server
    finally:
        server.close()


def label_of(lake: Lake, task_id: int) -> str | None:
    return next((r["label"] for r in rows(lake, "labels/s") if r["task_id"] == task_id), None)


@pytest.mark.slow
def test_an_annotation_made_in_label_studio_reaches_the_lake(
    sync: LabelSync, project: int, receiving: tuple[Recording, WebhookServer]
) -> None:
    receiver, server = receiving
    hook = register(sync, project, server.url, SECRET)
    assert register(sync, project, server.url, SECRET) == hook  # no second webhook
    hooks = [h for h in sync.client.webhooks.list(project=str(project)) if h.project == project]
    assert [(h.id, sorted(h.actions or [])) for h in hooks] == [(hook, sorted(ACTIONS))]

    task = sync.task_row_ids(project)["h1"]
    made = sync.client.annotations.create(id=task, result=choice_result("Sports"))
    wait_for("the label in the lake", lambda: label_of(sync.lake, task) == "Sports")
    (row,) = rows(sync.lake, "annotations/s")
    assert (row["annotation_id"], row["row_id"], row["url"]) == (made.id, "h1", "http://site/1")
    assert receiver.answered[-1][0] == 200


@pytest.mark.slow
def test_a_webhook_with_a_wrong_secret_is_refused(
    sync: LabelSync, project: int, receiving: tuple[Recording, WebhookServer]
) -> None:
    receiver, server = receiving
    register(sync, project, server.url, "not-the-secret")
    task = sync.task_row_ids(project)["h0"]
    sync.client.annotations.create(id=task, result=choice_result("World"))
    wait_for("Label Studio's request", lambda: receiver.answered)
    assert [status for status, _ in receiver.answered] == [401]
    assert sync.lake.tables() == []
    # the secret put right, the next event is recorded
    register(sync, project, server.url, SECRET)
    sync.client.annotations.create(id=task, result=choice_result("Business"))
    wait_for("the label in the lake", lambda: label_of(sync.lake, task) == "Business")


@pytest.mark.slow
def test_updates_and_deletions_in_label_studio_reach_the_lake(
    sync: LabelSync,
    project: int,
    receiving: tuple[Recording, WebhookServer],
    label_studio: LabelStudioServer,
    tmp_path: Path,
) -> None:
    receiver, server = receiving
    register(sync, project, server.url, SECRET)
    task = sync.task_row_ids(project)["h2"]
    first = sync.client.annotations.create(id=task, result=choice_result("World"))
    second = sync.client.annotations.create(id=task, result=choice_result("Sports"))
    wait_for("the second label", lambda: label_of(sync.lake, task) == "Sports")

    # a pull into another lake must find what the webhooks wrote
    pulled = LabelSync(sync.url, label_studio.token, Lake(tmp_path / "pulled"))

    def agrees() -> None:
        pulled.pull(project, "labels/s")
        for table in ("labels/s", "annotations/s"):
            assert rows(pulled.lake, table) == rows(sync.lake, table), table

    agrees()
    assert second.id is not None and first.id is not None
    sync.client.annotations.update(id=second.id, result=choice_result("Business"))
    wait_for("the updated label", lambda: label_of(sync.lake, task) == "Business")
    agrees()
    sync.client.annotations.delete(id=second.id)
    wait_for("the label before it", lambda: label_of(sync.lake, task) == "World")
    agrees()
    sync.client.annotations.delete(id=first.id)
    wait_for("no label", lambda: not rows(sync.lake, "labels/s"))
    assert rows(sync.lake, "annotations/s") == []
    agrees()
    assert {status for status, _ in receiver.answered} == {200}


@pytest.mark.slow
def test_the_webhook_command_records_labels_and_retrains(
    sync: LabelSync, label_studio: LabelStudioServer, tmp_path: Path
) -> None:
    recipe = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    recipe["name"] = "clihook"
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "clihook.yaml").write_text(yaml.safe_dump(recipe))
    lake = Lake(tmp_path / "cli-lake")
    texts = {"h9": "rockets and chips", "h10": "goals and cups"}
    lake.append(
        "curated/clihook",
        pa.Table.from_pylist(
            [{"content_sha256": h, "url": f"http://site/{h}", "body": t} for h, t in texts.items()]
        ),
    )
    env = {
        **os.environ,
        "HARVEST_SOURCES": str(tmp_path / "sources"),
        "HARVEST_LAKE": lake.root,
        "HARVEST_LABEL_STUDIO_DATA_DIR": str(tmp_path / "ls"),
        "HARVEST_LABEL_STUDIO_TOKEN": label_studio.token,
        "HARVEST_LABEL_STUDIO_PORT": str(label_studio.port),
        "HARVEST_WEBHOOK_SECRET": SECRET,
        "HARVEST_MODELS": str(tmp_path / "models"),
    }
    port = free_port()
    log = tmp_path / "webhook.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harvest.cli",
                "label",
                "webhook",
                "--port",
                str(port),
                "--k",
                "2",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        line = wait_for("the webhook registered", lambda: _registered(log))
        assert line["source"] == "clihook"
        project = int(line["project_id"])
        sync.push(
            project, [{"row_id": h, "url": f"http://site/{h}", "text": t} for h, t in texts.items()]
        )
        tasks = sync.task_row_ids(project)
        sync.client.annotations.create(id=tasks["h9"], result=choice_result("Sci/Tech"))
        wait_for("the label", lambda: [r["label"] for r in rows(lake, "labels/clihook")])
        assert [r["label"] for r in rows(lake, "labels/clihook")] == ["Sci/Tech"]
        assert "retrain clihook" not in log.read_text()  # one label of the two it waits for
        sync.client.annotations.create(id=tasks["h10"], result=choice_result("Sports"))
        wait_for("the retrain", lambda: "retrain clihook: model" in log.read_text())
        assert "from 2 labels" in log.read_text()
        meta = json.loads((tmp_path / "models" / "clihook" / "model.json").read_text())
        assert sorted(meta["classes"]) == ["Sci/Tech", "Sports"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()


def _registered(log: Path) -> dict[str, Any] | None:
    for text in log.read_text().splitlines():
        if text.startswith("{") and '"webhook"' in text:
            return dict(json.loads(text))
    return None
