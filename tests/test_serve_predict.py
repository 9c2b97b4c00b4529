"""`POST /predict` on a real `harvest serve`: the champion scores, micro-batched, and a
promote swaps the model under a stream of requests without an error."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from harvest.config import Config
from harvest.service.predictroute import FAST_BODY, MAX_TEXT, MAX_TEXTS
from ingestion.lake import Lake
from tests.helpers import last_json, run_harvest
from tests.service import Live
from tests.test_tracking import env_of, labelled_lake

TEXTS = ["The council voted on the budget.", "The striker scored twice.", "Shares fell."]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, list[str]]]:
    """Two versions of harvest-demo, v1 the champion, and the service started after."""
    tmp = tmp_path_factory.mktemp("serve-predict")
    live = Live(tmp)
    cfg = Config(lake=live.env["HARVEST_LAKE"], reports=live.env["HARVEST_REPORTS"])
    classes = sorted(set(labelled_lake(cfg, "demo", 120)))
    for seed in ("0", "1"):
        argv = ["train", "--source", "demo", "--epochs", "1", "--seed", seed, "--model", "ngram"]
        out = last_json(run_harvest(argv, env_of(cfg)).stdout)  # the project's demo recipe
        assert out["mlflow"]["model_version"] == int(seed) + 1  # type: ignore[index]
    run_harvest(["model", "promote", "harvest-demo", "1"], live.env)
    live.start()
    try:
        yield live, classes
    finally:
        live.stop()


def test_the_champion_scores_one_text_or_a_batch_and_needs_the_token(
    served: tuple[Live, list[str]],
) -> None:
    live, classes = served
    assert live.post("/predict", auth=False, json={"text": TEXTS[0]}).status_code == 401
    one = live.post("/predict", json={"text": TEXTS[0]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["model"], body["alias"], body["version"]) == ("harvest-demo", "champion", 1)
    (p,) = body["predictions"]
    assert sorted(p["probabilities"]) == classes and p["label"] in classes
    assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    many = live.post("/predict", json={"texts": TEXTS}).json()
    assert len(many["predictions"]) == 3
    # the same text scores the same in a batch, but for the last bits of float32 kernels
    first = many["predictions"][0]
    assert first["label"] == p["label"]
    assert first["probabilities"] == pytest.approx(p["probabilities"], abs=1e-5)
    other = live.post("/predict", params={"alias": "challenger"}, json={"texts": TEXTS}).json()
    assert (other["alias"], other["version"]) == ("challenger", 2)


@pytest.mark.parametrize(
    ("body", "params", "status", "said"),
    [
        ({"text": ""}, {}, 422, "text"),
        ({"text": "   "}, {}, 422, "text"),
        ({"text": "x" * 10_000_000}, {}, 422, "at most 100000"),
        ({"texts": []}, {}, 422, "texts"),
        ({"text": "a", "texts": ["b"]}, {}, 422, "exactly one"),
        ({"text": 5}, {}, 422, "text"),
        (b"{not json", {}, 422, "JSON"),
        ({"text": "a"}, {"model": "harvest-none"}, 404, "harvest-none"),
        ({"text": "a"}, {"alias": "gold"}, 404, "gold"),
        ({"text": "a"}, {"model": "../etc"}, 422, "model"),
    ],
)
def test_bad_input_is_a_4xx_with_a_message(
    served: tuple[Live, list[str]], body: object, params: dict[str, str], status: int, said: str
) -> None:
    live, _ = served
    if isinstance(body, bytes):
        answer = live.post(
            "/predict", data=body, params=params, headers={"Content-Type": "application/json"}
        )
    else:
        answer = live.post("/predict", json=body, params=params)
    assert answer.status_code == status, answer.text[:500]
    assert said in answer.json()["detail"], answer.text[:500]


# characters texts are drawn from; no C0 separators (U+001C-U+001F), which Python counts
# as white space and the route's pattern does not
LETTERS = "abcxyz019 .,'!?-éßΩж漢字🙂\u0000\u200b"
BLANKS = " \t\n\r\u00a0\u2003\u3000"


def _text(rng: random.Random) -> object:
    """A value for a text: mostly a string, some blank, long, or not a string at all."""
    kind = rng.random()
    if kind < 0.6:
        return "".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 80)))
    if kind < 0.68:
        return "".join(rng.choice(BLANKS) for _ in range(rng.randint(0, 5)))
    if kind < 0.74:  # either side of the longest text taken
        return "w" * rng.choice([MAX_TEXT, MAX_TEXT + 1])
    if kind < 0.78:
        return "a\ud800b"  # a lone surrogate: no text in any encoding
    return rng.choice([None, 0, -1.5, True, [], {}, ["a"], {"text": "a"}])


def _body(rng: random.Random) -> bytes:
    """A request body from a family of good and bad ones."""
    kind = rng.random()
    if kind < 0.45:
        fields: dict[str, object] = {"text": _text(rng)}
    elif kind < 0.8:
        n = (
            rng.choice([0, 1, 2, 7, MAX_TEXTS, MAX_TEXTS + 1])
            if rng.random() < 0.2
            else rng.randint(1, 6)
        )
        # a thousand texts of one draw, not a thousand draws: a long body, not a slow test
        one = _text(rng) if n > 10 else None
        fields = {"texts": [one if n > 10 else _text(rng) for _ in range(n)]}
        if rng.random() < 0.3:
            fields["texts"] = _text(rng)  # not a list
    else:
        fields = rng.choice([{}, {"text": None}, {"texts": None}, {"text": "a", "texts": ["b"]}])
    if rng.random() < 0.1:
        fields[rng.choice(["model", "label", "Text", ""])] = "x"  # a field the route forbids
    body = json.dumps(fields).encode()
    mangle = rng.random()
    if mangle < 0.06:
        return body[: rng.randint(0, len(body) - 1)]  # cut short
    if mangle < 0.1:
        return rng.choice([b"", b"null", b"[]", b'"text"', b"42", b"\xff\xfe{}", b"{'text': 'a'}"])
    return body


def _valid(body: bytes) -> list[str] | None:
    """The texts of a body the route accepts, by its documented rules; None if refused."""

    def text(value: object) -> bool:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return not value.isspace()

    try:
        fields = json.loads(body)
    except ValueError:
        return None
    if not isinstance(fields, dict) or set(fields) - {"text", "texts"}:
        return None
    one, many = fields.get("text"), fields.get("texts")
    if (one is None) == (many is None):
        return None
    if one is not None:
        return [one] if text(one) else None
    if not isinstance(many, list) or not 1 <= len(many) <= MAX_TEXTS:
        return None
    return many if all(text(t) for t in many) else None


def test_bodies_drawn_at_random_are_scored_or_refused_with_a_message_never_a_500(
    served: tuple[Live, list[str]],
) -> None:
    """A family of bodies, good and bad, drawn afresh each run (the seed is in any
    failure), each sent to the fast path and, with a query only the route takes, to the
    route: each is scored exactly when the route's rules accept it, else refused with a
    4xx and a message, the same way on both paths."""
    live, classes = served
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    session = requests.Session()
    for i in range(60):
        body = _body(rng)
        texts = _valid(body)
        got = []
        for params in ({}, {"note": "x"}):
            answer = session.post(
                live.url + "/predict",
                params=params,
                data=body,
                headers={**live.auth, "Content-Type": "application/json"},
                timeout=60,
            )
            said = f"seed {seed}, body {i} {body[:200]!r} {params}: {answer.text[:300]}"
            if texts is None:
                assert 400 <= answer.status_code < 500, said
                detail = answer.json()["detail"]
                assert isinstance(detail, str) and detail, said
            else:
                assert answer.status_code == 200, said
                predictions = answer.json()["predictions"]
                assert len(predictions) == len(texts), said
                assert {p["label"] for p in predictions} <= set(classes), said
            got.append(answer.status_code)
        assert got[0] == got[1], f"seed {seed}, body {i} {body[:200]!r}: the paths differ {got}"


def test_requests_the_fast_path_leaves_to_the_route_get_the_same_answer(
    served: tuple[Live, list[str]],
) -> None:
    """A well-formed request is answered before FastAPI's layers; any other goes on to the
    route with the body already read, and must be answered alike."""
    live, _ = served
    fast = live.post("/predict", json={"texts": TEXTS})
    assert fast.status_code == 200, fast.text[:500]
    others = [
        live.post("/predict", params={"note": "x"}, json={"texts": TEXTS}),  # unknown query
        live.post(  # the scheme in lower case, which only the route's check takes
            "/predict",
            auth=False,
            headers={"Authorization": "bearer " + live.token},
            json={"texts": TEXTS},
        ),
        live.post(  # a name given twice
            "/predict",
            params=[("alias", "champion"), ("alias", "champion")],
            json={"texts": TEXTS},
        ),
    ]
    for answer in others:
        assert answer.status_code == 200, answer.text[:500]
        got, want = answer.json(), fast.json()
        assert (got["model"], got["version"]) == (want["model"], want["version"])
        for g, w in zip(got["predictions"], want["predictions"], strict=True):
            assert g["label"] == w["label"]
            assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-5)
    # a body longer than the fast path reads: the route gets what was read and the rest
    long = [f"{TEXTS[i % 3]} {'word ' * 18_000}{i}" for i in range(FAST_BODY // 90_000 + 1)]
    answer = live.post("/predict", json={"texts": long})
    assert answer.status_code == 200, answer.text[:500]
    assert len(answer.json()["predictions"]) == len(long)


def test_the_access_log_leaves_out_answered_predictions_only(
    served: tuple[Live, list[str]],
) -> None:
    """Answered predictions go to the prediction log; refused ones and other routes stay in
    the access log."""
    live, _ = served
    tag = f"t{random.randrange(10**9)}"
    assert live.post("/predict", params={"alias": "champion"}, json={"text": tag}).ok
    assert (
        live.post("/predict", auth=False, params={"alias": tag}, json={"text": "a"}).status_code
        == 401
    )
    assert live.post("/predict", params={"alias": tag}, json={"text": ""}).status_code == 422
    assert live.get("/sources", params={"x": tag}).status_code in (200, 401)
    deadline = time.monotonic() + 10
    while True:
        text = live.log_file.read_text(errors="replace")
        access = [
            r["message"]
            for r in map(json_or_none, text.splitlines())
            if r and r.get("logger") == "harvest.access"
        ]
        if sum(tag in m for m in access) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    mine = [m for m in access if tag in m]
    assert any('"POST /predict?alias=' in m and m.endswith(" 401") for m in mine), mine
    assert any('"POST /predict?alias=' in m and m.endswith(" 422") for m in mine), mine
    assert any('"GET /sources?x=' in m for m in mine), mine
    assert not any(m.endswith(" 200") and "/predict" in m for m in access), access[-5:]


def json_or_none(line: str) -> dict[str, Any] | None:
    """A log line's JSON object; None for another line, or one still being written."""
    try:
        found = json.loads(line)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def test_a_promote_during_a_stream_swaps_the_model_without_an_error(
    served: tuple[Live, list[str]],
) -> None:
    live, _ = served
    stop = time.monotonic() + 60
    promoted_at: list[float] = []

    def stream() -> list[tuple[float, int]]:
        seen = []
        session = requests.Session()
        while time.monotonic() < stop:
            sent = time.monotonic()
            answer = session.post(
                live.url + "/predict", headers=live.auth, json={"texts": TEXTS}, timeout=30
            )
            assert answer.status_code == 200, answer.text[:500]
            seen.append((sent, answer.json()["version"]))
            if promoted_at and sent > promoted_at[0] + 15:
                break  # long enough past the promote for the watcher to have swapped
        return seen

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        streams = [pool.submit(stream) for _ in range(8)]
        time.sleep(2)
        before = time.monotonic()
        run_harvest(["model", "promote", "harvest-demo", "2"], live.env)
        promoted_at.append(time.monotonic())
        seen = [s for f in streams for s in f.result()]
    assert {v for _, v in seen} == {1, 2}
    # the champion was v1 until the promote began, and v2 from well after it ended
    assert all(sent > before for sent, v in seen if v == 2)
    late = [v for sent, v in seen if sent > promoted_at[0] + 10]
    assert late and set(late) == {2}
    run_harvest(["model", "promote", "harvest-demo", "1"], live.env)  # as the module had it


def test_answers_are_logged_to_the_lake_off_the_request_path(
    served: tuple[Live, list[str]],
) -> None:
    live, _ = served
    texts = [f"Logged text number {i} about the market." for i in range(5)]
    answer = live.post("/predict", json={"texts": texts}).json()
    lake = Lake(live.env["HARVEST_LAKE"])
    deadline = time.monotonic() + 30
    mine = None
    while time.monotonic() < deadline:
        if lake.exists("predictions/harvest-demo"):
            rows = lake.read("predictions/harvest-demo").to_pylist()
            hashes = {hashlib.sha256(t.encode()).hexdigest(): t for t in texts}
            mine = [r for r in rows if r["text_sha256"] in hashes]
            if len(mine) == len(texts):
                break
        time.sleep(0.5)
    assert mine is not None and len(mine) == len(texts)
    by_hash = {r["text_sha256"]: r for r in mine}
    for text, p in zip(texts, answer["predictions"], strict=True):
        row = by_hash[hashlib.sha256(text.encode()).hexdigest()]
        assert row["text"] is None and row["text_length"] == len(text)  # no raw text
        assert (row["label"], row["model_version"]) == (p["label"], answer["version"])
        assert json.loads(row["probabilities"]) == pytest.approx(p["probabilities"])
        assert row["latency_ms"] > 0


def test_the_log_keeps_the_share_asked_for_and_the_text_only_when_told(tmp_path: Path) -> None:
    from harvest.service.predict import Loaded
    from harvest.service.predictlog import PredictionLog
    from training.pyfunc import Scorer

    scored = np.tile([0.9, 0.1], (400, 1))
    texts = [f"t{i}" for i in range(400)]
    model = Loaded("harvest-x", "champion", 3, Scorer(["a", "b"], lambda t: scored[: len(t)]))
    for sample, keep_text in ((0.25, True), (1.0, False)):
        lake = Lake(str(tmp_path / f"lake-{sample}"))
        log = PredictionLog(lake, sample, keep_text, rng=random.Random(7))
        log.start()
        log.record(model, texts, scored, 0.01)
        log.stop()
        rows = lake.read("predictions/harvest-x").to_pylist()
        assert abs(len(rows) - 400 * sample) <= 40 * sample + 5
        assert all((r["text"] is not None) == keep_text for r in rows)
        assert {(r["label"], r["confidence"]) for r in rows} == {("a", 0.9)}
    with pytest.raises(Exception, match="log_sample"):
        PredictionLog(Lake(str(tmp_path / "l")), 1.5)


def test_the_logged_probabilities_read_as_json_dumps_writes_them() -> None:
    from harvest.service.predictlog import probability_json

    rng = np.random.default_rng(5)
    classes = ["sport", 'say "hi"', "100%", "naïve\\x", "%r"]
    values = rng.dirichlet(np.ones(len(classes)), 50)
    values[0] = [1.0, 0.0, 0.0, 1e-300, 0.0]
    want = [json.dumps(dict(zip(classes, row, strict=True))) for row in values.tolist()]
    assert probability_json(classes, values) == want
    values[1, 2] = np.nan  # spelt as json spells it
    assert probability_json(classes, values)[1] == json.dumps(
        dict(zip(classes, values[1].tolist(), strict=True))
    )


def test_each_batch_is_scored_on_the_threads_its_model_asks_for() -> None:
    import torch

    from harvest.service import predict
    from harvest.service.predict import _score
    from training.model import ModelConfig, NgramClassifier
    from training.pyfunc import Scorer, torch_scorer

    ngram = torch_scorer(NgramClassifier(ModelConfig(("a", "b"), buckets=64)))
    assert ngram.threads == 1
    seen: list[int] = []

    def proba(texts: list[str]) -> np.ndarray:
        seen.append(torch.get_num_threads())
        return np.full((len(texts), 2), 0.5)

    own = Scorer(["a", "b"], proba)  # no preference: torch's own choice
    with concurrent.futures.ThreadPoolExecutor(1) as scoring:  # as the service scores
        for scorer in (own, ngram, own):
            out = scoring.submit(_score, scorer, ["x", "y"]).result()
            assert out.shape == (2, 2)
            if scorer is ngram:
                seen.append(scoring.submit(torch.get_num_threads).result())
    # torch's own choice is what it had before the service's first batch set any
    assert seen == [predict._threads, 1, predict._threads]


def test_a_log_that_falls_behind_keeps_the_newest_answers_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from harvest.service import predictlog
    from harvest.service.predict import Loaded
    from training.pyfunc import Scorer

    monkeypatch.setattr(predictlog, "MAX_QUEUED", 1000)
    scored = np.tile([0.9, 0.1], (400, 1))
    model = Loaded("harvest-x", "champion", 3, Scorer(["a", "b"], lambda t: scored[: len(t)]))
    lake = Lake(str(tmp_path / "lake"))
    log = predictlog.PredictionLog(lake)  # its writer not started: as stuck as it gets
    answers = [[f"answer {k} text {i}" for i in range(400)] for k in range(5)]
    for texts in answers:
        log.record(model, texts, scored, 0.01)
    # past 1,000 texts queued the oldest answers went, each whole
    assert log.dropped == 3 * 400
    log.flush()
    rows = lake.read("predictions/harvest-x").to_pylist()
    kept = [t for texts in answers[3:] for t in texts]
    assert sorted(r["text_sha256"] for r in rows) == sorted(
        hashlib.sha256(t.encode()).hexdigest() for t in kept
    )
    assert "1200 rows dropped" in caplog.text
