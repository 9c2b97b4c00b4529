"""The one error model: every project error is a HarvestError of one kind, whose exit code
the command line ends with and whose status the API answers."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from harvest.service.app import add_error_handlers
from ingestion import errors
from ingestion.errors import HarvestError
from tests.helpers import free_port, run_harvest
from validation import quarantine

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harvest", "spiders", "ingestion", "validation", "labeling", "training")
# Scrapy's download errors, which its retry middleware handles: they never reach a person
NOT_OURS = {"BrowserConnectionError", "RenderTimeoutError", "SlowRenderError"}
# signals caught where they are raised, never shown: the API crawl's own (spiders/api.py),
# a path's parse, which a recipe check turns into a problem (spiders/apipath.py), and a
# value the row hash's JSON leaves to json (ingestion/canonical.py)
NOT_OURS |= {"PageGaveUpError", "UnchangedError", "NoExitError", "PathError", "_NotPlainError"}

# (exit code, HTTP status) of every project error; a new error class is added here
EXPECTED = {
    "HarvestError": (1, 500),
    "CheckFailedError": (1, 409),
    "InvalidInputError": (2, 422),
    "NotFoundError": (2, 404),
    "ConflictError": (2, 409),
    "GaveUpError": (3, 502),
    "UnavailableError": (69, 503),
    "LockedError": (75, 409),
    "ConfigurationError": (78, 422),
    # ingestion
    "LakeError": (2, 409),
    "LakeNotFoundError": (2, 404),
    "LeakError": (1, 409),
    "SplitError": (2, 422),
    "StepError": (78, 422),
    "BusyError": (75, 409),
    # spiders
    "RecipeError": (78, 422),
    "UnknownRecipeError": (2, 404),
    "ProxyListError": (78, 422),
    "ApiAuthError": (78, 422),
    # validation
    "QuarantineError": (2, 422),
    "DriftError": (2, 422),
    # labeling
    "ModelError": (2, 409),
    "SyncError": (69, 503),
    "SyncSetupError": (78, 422),
    "EventError": (2, 400),
    "ReportError": (2, 409),
    "TaskTypeError": (78, 422),
    "StoreError": (2, 409),
    "LabelStudioError": (69, 503),
    "LabelStudioSetupError": (78, 422),
    # training
    "TrainError": (2, 422),
    "EmbeddingError": (78, 422),
    "TrackingError": (69, 503),
    "TrackingStoreError": (78, 422),
    "RegistryError": (2, 404),
    "ProfileError": (2, 409),
    # harvest
    "ConfigError": (78, 422),
    "CrawlError": (69, 503),
    "CrawlSetupError": (78, 422),
    "StartUrlError": (2, 422),
    "SourceBusyError": (75, 409),
    "StoppingError": (69, 503),
    "BodyTooLargeError": (2, 413),
    "NotCancellableError": (2, 409),
    "MonitorError": (2, 409),
}


def exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class the six packages define, found in their source."""
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = [
                node.name
                for node in tree.body
                if isinstance(node, ast.ClassDef)
                and any(ast.unparse(b).endswith(("Error", "Exception")) for b in node.bases)
            ]
            if not names:
                continue
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            loaded = importlib.import_module(module)
            for name in names:
                cls = getattr(loaded, name)
                if isinstance(cls, type) and issubclass(cls, BaseException):
                    found[name] = cls
    return found


def test_every_project_error_is_a_harvest_error_with_its_codes() -> None:
    found = {n: c for n, c in exception_classes().items() if n not in NOT_OURS}
    assert set(found) == set(EXPECTED)
    for name, cls in found.items():
        assert issubclass(cls, HarvestError), name
        assert (cls.exit_code, cls.http_status) == EXPECTED[name], name
        # its kind is the first in its MRO (a family's exception puts its kind first)
        if cls is not HarvestError:
            kind = next(k for k in cls.__mro__ if k in errors.KINDS)
            assert (cls.exit_code, cls.http_status)[0] == kind.exit_code, name


def test_the_exit_codes_are_the_documented_ones() -> None:
    assert {k.exit_code for k in errors.KINDS} == {1, 2, 3, 69, 75, 78}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for code in (0, 1, 2, 3, 69, 75, 78):
        assert f"| {code} |" in readme, code


def test_a_hint_is_added_once() -> None:
    assert str(errors.UnavailableError("down", hint="start it")) == "down: start it"
    assert str(errors.UnavailableError("down: start it", hint="start it")) == "down: start it"
    assert str(errors.InvalidInputError("bad")) == "bad"


def test_a_review_that_names_no_row_is_a_4xx_but_not_a_conflict() -> None:
    """QuarantineError once derived from LakeError only to be caught, and answered 409."""
    held = pa.table({"url": ["http://s/0"], "failed_expectations": [["not_null(body)"]]})
    app = FastAPI()
    add_error_handlers(app)

    @app.post("/review")
    def review() -> None:
        quarantine.select(held, "s", [], None, False)

    answer = TestClient(app).post("/review")
    assert 400 <= answer.status_code < 500 and answer.status_code != 409, answer.text
    assert answer.status_code == 422
    assert "say which rows" in answer.json()["detail"]


def test_an_unavailable_label_studio_exits_69_and_says_how_to_start_it(
    lake_env: dict[str, str],
) -> None:
    env = {**lake_env, "HARVEST_LABEL_STUDIO_PORT": str(free_port())}
    proc = run_harvest(["label", "pull", "demo"], env, check=False, timeout=120)
    assert proc.returncode == 69, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "is unreachable" in line and "start it with `harvest label serve`" in line
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["crawl", "--no-such-flag"], 2, "No such option"),  # Click's own usage error
        (["quarantine", "list", "nosuch"], 2, "error: "),  # an unknown source: usage
        (["lake", "history", "raw/none"], 2, "error: no table 'raw/none'"),
    ],
)
def test_usage_errors_exit_2(
    lake_env: dict[str, str], args: list[str], code: int, says: str
) -> None:
    proc = run_harvest(args, lake_env, check=False, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert says in proc.stderr


def test_a_broken_configuration_exits_78(lake_env: dict[str, str], tmp_path: Path) -> None:
    env = {**lake_env, "HARVEST_LABEL_STUDIO_PORT": "many"}
    proc = run_harvest(["lake", "history", "raw/x"], env, check=False, timeout=120)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.startswith("error: ") and "expected a whole number" in proc.stderr
