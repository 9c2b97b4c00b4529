"""Registered models as MLflow models: loaded by MLflow in a fresh process, and files
scored by `harvest predict`, on a real SQLite store in the test's folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harvest import stages
from harvest.config import Config
from harvest.recipe import load_recipe
from tests.helpers import ROOT, last_json, run_harvest
from tests.test_tracking import env_of, labelled_lake
from training import pyfunc, registry
from training.tracking import Store


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, list[str]]:
    """A model of the demo's labels, trained and registered once for the module, and
    the demo's labelling model, registered as its champion."""
    tmp = tmp_path_factory.mktemp("predict")
    cfg = Config(lake=str(tmp / "lake"), reports=str(tmp / "reports"))
    labels = labelled_lake(cfg, "demo", 120)
    out = last_json(
        run_harvest(
            ["train", "--source", "demo", "--epochs", "2", "--model", "ngram"], env_of(cfg)
        ).stdout
    )
    assert out["mlflow"]["model_version"] == 1  # type: ignore[index]
    done = stages.retrain_source_model(cfg, load_recipe("demo", str(ROOT / "sources")))
    assert done.record.aliases == {"champion": 1}
    return cfg, sorted(set(labels))


@pytest.mark.parametrize("model", ["harvest-demo@challenger", "labeling-demo@champion"])
def test_mlflow_loads_the_registered_model_in_a_fresh_process(
    trained: tuple[Config, list[str]], model: str
) -> None:
    cfg, classes = trained
    script = (
        "import json, sys, mlflow, mlflow.pyfunc, pandas as pd\n"
        "mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_registry_uri(sys.argv[1])\n"
        "m = mlflow.pyfunc.load_model('models:/' + sys.argv[2])\n"
        "texts = ['The council voted on the budget.', 'The striker scored twice.']\n"
        "a = m.predict(texts)\n"
        "b = m.predict(pd.DataFrame({'text': texts}))\n"
        "print(json.dumps({'a': a.to_dict('list'), 'b': b.to_dict('list')}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-c", script, cfg.tracking, model],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["a"] == got["b"]  # a list of texts and a DataFrame are the same input
    assert set(got["a"]["label"]) <= set(classes) and len(got["a"]["label"]) == 2
    probs = pd.DataFrame({c: got["a"][pyfunc.PROB + c] for c in classes})
    assert probs.sum(axis=1).tolist() == pytest.approx([1.0, 1.0], abs=1e-4)
    # the label is the class of highest probability
    assert probs.idxmax(axis=1).tolist() == got["a"]["label"]


@pytest.mark.parametrize(("suffix_in", "suffix_out"), [(".jsonl", ".parquet"), (".csv", ".csv")])
def test_predict_scores_a_file_in_batches_keeping_every_row_and_column(
    trained: tuple[Config, list[str]], tmp_path: Path, suffix_in: str, suffix_out: str
) -> None:
    cfg, classes = trained
    texts = [f"Report {i}: the {('market', 'match', 'election')[i % 3]} moved." for i in range(23)]
    frame = pd.DataFrame({"id": range(23), "body": texts})
    source = tmp_path / f"in{suffix_in}"
    if suffix_in == ".csv":
        frame.to_csv(source, index=False)
    else:
        frame.to_json(source, orient="records", lines=True)
    output = tmp_path / f"out{suffix_out}"
    argv = ["predict", "harvest-demo@1", "--input", str(source), "--output", str(output)]
    argv += ["--text-column", "body", "--batch-size", "5", "--device", "cpu"]
    out = last_json(run_harvest(argv, env_of(cfg)).stdout)
    assert (out["model"], out["version"], out["rows"]) == ("harvest-demo", 1, 23)
    scored = pd.read_parquet(output) if suffix_out == ".parquet" else pd.read_csv(output)
    assert scored["id"].tolist() == list(range(23)) and scored["body"].tolist() == texts
    # batches of 5 score exactly as one batch of all
    folder, tmp = registry.local_copy(
        Store(cfg.tracking), registry.version(Store(cfg.tracking), "harvest-demo", 1)
    )
    whole = pyfunc.load(folder).predict(texts)
    assert scored["label"].tolist() == whole["label"].tolist()
    for c in classes:
        assert scored[pyfunc.PROB + c].tolist() == pytest.approx(
            whole[pyfunc.PROB + c].tolist(), abs=1e-5
        )
    assert sum(out["labels"].values()) == 23  # type: ignore[union-attr]


def test_the_labelling_model_scores_files_as_it_ranks_tasks(
    trained: tuple[Config, list[str]], tmp_path: Path
) -> None:
    cfg, classes = trained
    texts = ["The council voted on the budget.", "The striker scored twice in the final."]
    source = tmp_path / "in.jsonl"
    pd.DataFrame({"text": texts}).to_json(source, orient="records", lines=True)
    output = tmp_path / "out.parquet"
    argv = ["predict", "labeling-demo", "--input", str(source), "--output", str(output)]
    out = last_json(run_harvest(argv, env_of(cfg)).stdout)
    assert (out["model"], out["version"]) == ("labeling-demo", 1)
    served = stages.source_model(cfg, "demo")
    assert served is not None
    scored = pd.read_parquet(output)
    assert scored["label"].tolist() == served.predict(texts)
    probs = served.predict_proba(texts)
    for j, c in enumerate(served.classes):
        assert scored[pyfunc.PROB + c].tolist() == pytest.approx(probs[:, j].tolist(), abs=1e-9)


def test_bad_input_to_predict_is_a_clear_error(
    trained: tuple[Config, list[str]], tmp_path: Path
) -> None:
    cfg, _ = trained
    env = env_of(cfg)
    good = tmp_path / "in.jsonl"
    good.write_text(json.dumps({"text": "a"}) + "\n")
    cases = [
        (["harvest-demo", "--input", str(tmp_path / "none.jsonl")], "no input file"),
        (["harvest-demo@1", "--input", str(good), "--text-column", "body"], "no 'body' column"),
        (["harvest-demo@1", "--input", str(tmp_path / "in.xlsx")], "unknown file kind"),
        (["harvest-nope", "--input", str(good)], "harvest-nope"),
        (["harvest-demo@9", "--input", str(good)], "no version 9"),
        (["harvest-demo@gold", "--input", str(good)], "alias 'gold'"),
    ]
    for argv, expected in cases:
        output = tmp_path / "out.parquet"
        done = run_harvest(["predict", *argv, "--output", str(output)], env, check=False)
        assert done.returncode != 0 and expected in done.stderr, (argv, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        assert not output.exists()  # nothing half written


def _lines(rows: list[object]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD = [{"id": i, "text": f"Report {i} on the market."} for i in range(7)]
# each bad where a batch of 5 has been written already; the outputs it is bad for
BAD_FILES = [
    ("in.jsonl", _lines([*GOOD, "{broken", *GOOD]), "line 8: not JSON", "parquet csv"),
    ("in.jsonl", _lines([*GOOD, [1, 2]]), "line 8: a JSON object a line, not list", "csv"),
    ("in.jsonl", _lines([*GOOD, {"id": 7, "text": 5}]), "row 8: 'text' is 5, not a text", "csv"),
    ("in.jsonl", _lines([*GOOD, {"id": 7, "text": "a", "l": "en"}]), "column(s) l", "parquet csv"),
    ("in.jsonl", _lines([*GOOD, {"id": "seven", "text": "a"}]), "rows 6-8", "parquet"),
    (
        "in.csv",
        "id,text\n" + "".join(f"{i},t {i}\n" for i in range(7)) + '7,"open\n',
        "not CSV",
        "csv",
    ),
    ("in.parquet", "PAR1 not parquet", "not a Parquet file", "parquet"),
]


@pytest.mark.parametrize(("name", "content", "said", "outputs"), BAD_FILES)
def test_a_bad_row_is_an_error_naming_it_and_leaves_no_output(
    trained: tuple[Config, list[str]],
    tmp_path: Path,
    name: str,
    content: str,
    said: str,
    outputs: str,
) -> None:
    from ingestion.errors import InvalidInputError
    from training import batchscore

    cfg, _ = trained
    store = Store(cfg.tracking)
    scorer = pyfunc.load_version(store, registry.version(store, "harvest-demo", 1))
    source = tmp_path / name
    source.write_text(content)
    for output in (tmp_path / f"out.{kind}" for kind in outputs.split()):
        with pytest.raises(InvalidInputError, match=re.escape(said)) as caught:
            batchscore.total_rows(source)
            batchscore.score_file(scorer, source, output, size=5)
        assert str(source) in str(caught.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no output, no part file
    # the same file with the bad row's batch left out scores whole
    if name == "in.jsonl":
        good = tmp_path / "good.jsonl"
        good.write_text("".join(content.splitlines(keepends=True)[:5]))
        done = batchscore.score_file(scorer, good, tmp_path / "out.parquet", size=5)
        assert done.rows == 5


def test_missing_texts_are_scored_as_empty_whatever_their_kind(
    trained: tuple[Config, list[str]], tmp_path: Path
) -> None:
    from training import batchscore

    cfg, _ = trained
    store = Store(cfg.tracking)
    scorer = pyfunc.load_version(store, registry.version(store, "harvest-demo", 1))
    empty = scorer.predict([""])["label"][0]
    source = tmp_path / "in.parquet"  # pandas' string dtype: its missing value is pd.NA
    pd.DataFrame({"text": pd.array(["Shares fell.", None, "Goal!"], dtype="string")}).to_parquet(
        source
    )
    lines = tmp_path / "in.jsonl"  # null, and a row without the column
    lines.write_text(
        _lines([{"id": 1, "text": "Shares fell."}, {"id": 2, "text": None}, {"id": 3}])
    )
    for given in (source, lines):
        done = batchscore.score_file(scorer, given, tmp_path / "out.parquet", size=2)
        scored = pd.read_parquet(tmp_path / "out.parquet")
        assert done.rows == 3 and scored["label"][1] == empty, given
        assert scored["label"][0] == scorer.predict(["Shares fell."])["label"][0]


def test_predict_says_which_line_is_bad(trained: tuple[Config, list[str]], tmp_path: Path) -> None:
    cfg, _ = trained
    source = tmp_path / "in.jsonl"
    source.write_text(_lines([*GOOD, "{broken"]))
    output = tmp_path / "out.parquet"
    argv = ["predict", "harvest-demo@1", "--input", str(source), "--output", str(output)]
    done = run_harvest([*argv, "--batch-size", "5"], env_of(cfg), check=False)
    assert done.returncode != 0 and f"{source} line 8: not JSON" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not output.exists()


def test_a_stopped_run_leaves_no_part_file_and_the_next_sweeps_a_killed_ones(
    trained: tuple[Config, list[str]], tmp_path: Path
) -> None:
    cfg, _ = trained
    source = tmp_path / "long.jsonl"
    source.write_text(
        _lines([{"id": i, "text": f"Report {i} on the match."} for i in range(10**5)])
    )
    output = tmp_path / "out.parquet"
    argv = [sys.executable, "-m", "harvest.cli", "predict", "harvest-demo@1", "--input"]
    argv += [str(source), "--output", str(output), "--batch-size", "20", "--device", "cpu"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env_of(cfg)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob(".out.parquet.*.part")):  # its first batch written
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.1)
            proc.send_signal(sig)
            _, said = proc.communicate(timeout=60)
        finally:
            proc.kill()
        parts = list(tmp_path.glob(".out.parquet.*.part"))
        if sig == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM, said
            assert "stopped after" in said and "not written" in said, said
            assert "Traceback" not in said and parts == []
        else:
            assert [p.name for p in parts] == [f".out.parquet.{proc.pid}.part"]
        assert not output.exists()
    # the next run into the same file removes what the killed one left
    small = tmp_path / "small.jsonl"
    small.write_text(_lines(GOOD))
    argv = ["predict", "harvest-demo@1", "--input", str(small), "--output", str(output)]
    out = last_json(run_harvest(argv, env_of(cfg)).stdout)
    assert out["rows"] == len(GOOD) and pd.read_parquet(output)["id"].tolist() == list(range(7))
    assert list(tmp_path.glob(".out.parquet.*.part")) == []


def test_a_version_holding_only_model_pt_still_scores(
    trained: tuple[Config, list[str]], tmp_path: Path
) -> None:
    cfg, classes = trained
    store = Store(cfg.tracking)
    folder, _ = registry.local_copy(store, registry.version(store, "harvest-demo", 1))
    old = tmp_path / "old"
    old.mkdir()
    (old / pyfunc.MODEL_FILE).write_bytes((folder / "data" / pyfunc.MODEL_FILE).read_bytes())
    texts = ["The council voted on the budget."]
    assert pyfunc.load(old).predict(texts).equals(pyfunc.load(folder).predict(texts))
    with pytest.raises(Exception, match="no model harvest can score with"):
        pyfunc.load(tmp_path)


def test_a_request_waits_for_its_batch_no_longer_than_the_deadline(
    trained: tuple[Config, list[str]],
) -> None:
    import asyncio

    from harvest.service.predict import Predictor
    from ingestion.errors import UnavailableError

    cfg, classes = trained
    predictor = Predictor(Store(cfg.tracking), deadline=60.0)
    loaded, probs = asyncio.run(predictor.predict("harvest-demo", "challenger", ["a text"]))
    assert loaded.version == 1 and loaded.scorer.classes[int(probs[0].argmax())] in classes
    assert probs.shape == (1, len(classes)) and abs(float(probs.sum()) - 1) < 1e-4
    # no real model scores within a microsecond: the request ends, it does not hang. The
    # texts are long enough that scoring them outlasts the sweeper's first look by far: 500
    # texts of two words were scored, on a busy machine, before the event loop got the GIL
    # back to end them (an answer that is ready is given, deadline or not)
    hurried = Predictor(Store(cfg.tracking), deadline=1e-6)
    long = " ".join(f"word{i}" for i in range(300))
    with pytest.raises(UnavailableError, match="did not score within"):
        asyncio.run(hurried.predict("harvest-demo", "challenger", [long] * 500))


def test_a_batch_goes_once_the_requests_it_expects_are_in(
    trained: tuple[Config, list[str]],
) -> None:
    """Clients that send again once answered make each batch as large as the last: it is
    scored as soon as they are all in, not after its window. A window of an hour would
    end every request at its deadline if the batch waited it out."""
    import asyncio
    import dataclasses

    from harvest.service.predict import Predictor

    cfg, _ = trained
    predictor = Predictor(Store(cfg.tracking), window=3600.0, deadline=60.0)
    loaded = predictor.get("harvest-demo", "challenger")
    sizes: list[int] = []

    class Counting:  # the real scorer, with the size of every batch it is given
        def __getattr__(self, name: str) -> object:
            return getattr(loaded.scorer, name)

        def proba(self, texts: list[str]) -> object:
            sizes.append(len(texts))
            return loaded.scorer.proba(texts)

    counted = dataclasses.replace(loaded, scorer=Counting())  # type: ignore[arg-type]
    predictor.models[("harvest-demo", "challenger")] = counted
    texts = [f"The council voted on budget item {i}." for i in range(8)]

    async def rounds() -> list[list[float]]:
        answers = []
        for _ in range(5):  # 8 clients, each sending again once answered
            got = await asyncio.gather(
                *(predictor.predict("harvest-demo", "challenger", [t]) for t in texts)
            )
            answers.append([float(p[0].max()) for _, p in got])
        return answers

    answers = asyncio.run(rounds())
    assert sizes == [8] * 5
    # each request got its own text's row of the batch
    together = [float(row.max()) for row in loaded.scorer.proba(texts)]
    for got in answers:
        assert got == pytest.approx(together, abs=1e-6)


def test_a_request_naming_no_model_gets_the_configured_default(
    trained: tuple[Config, list[str]],
) -> None:
    import asyncio

    from harvest.service.predict import Predictor

    cfg, _ = trained
    store = Store(cfg.tracking)
    # the labelling model is not one `harvest train` registers: the only such is the default
    assert Predictor(store).default_model() == "harvest-demo"
    configured = Predictor(store, default="labeling-demo")
    name = configured.default_model()
    loaded, probs = asyncio.run(configured.predict(name, "champion", ["The striker scored."]))
    assert (loaded.name, loaded.version) == ("labeling-demo", 1) and len(probs) == 1


def test_the_stores_stamp_holds_through_reads_and_moves_with_a_promote(
    trained: tuple[Config, list[str]],
) -> None:
    cfg, _ = trained
    store = Store(cfg.tracking)
    before = store.stamp()
    assert before is not None
    registry.list_models(store)
    registry.by_alias(store, "harvest-demo", "challenger")
    assert store.stamp() == before  # reading asks nothing of the watcher
    registry.promote(store, "harvest-demo", 1, "stamped")
    assert store.stamp() != before  # a moved alias is seen at the next look
    assert Store("http://127.0.0.1:9/").stamp() is None  # no file: always asked
