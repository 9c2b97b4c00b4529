"""Every HTML page the project writes: one file, the shared base style, everything escaped."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from harvest.service import dashboard
from ingestion.html import BASE_TEMPLATES
from ingestion.lake import Lake
from labeling.report import write as write_labels
from training.evaluate import evaluate
from training.report import write_report as write_training
from validation.batch import BatchVerdict, Check
from validation.drift import drift_report
from validation.report import write_report as write_validation

EVIL = '<script>alert("x")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
BASE_CSS = resources.files("ingestion").joinpath("templates/base.css").read_text().strip()


@dataclass
class GateResult:
    rows_in: int = 3
    curated: int = 2
    quarantined: int = 1
    batch_status: str = "held"


def validation_pages(tmp: Path) -> list[Path]:
    outcomes = [SimpleNamespace(rule=EVIL, success=False, unexpected=1)]
    batch = BatchVerdict({}, [Check(EVIL, False, 8.0, EVIL)], 0)
    page = write_validation(tmp, "shop", 1, outcomes, GateResult(), batch)
    return [page, page.parent / "index.html"]


def drift_page(tmp: Path) -> list[Path]:
    lake = Lake(tmp / "lake")
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        values = [EVIL if v else "plain" for v in rng.random(60) < 0.5]
        lake.append("curated/shop", pa.table({EVIL: values, "n": rng.normal(seed, 1, 60)}))
    summary = drift_report(lake, "shop", tmp / "reports", 0, 1)
    return [Path(summary["report"])]


def label_page(tmp: Path) -> list[Path]:
    summary = {
        "source": "shop",
        "label_type": "single",
        "written_at": "2024-05-01T10:00:00+00:00",
        "versions": {"curated": 1, "labels": 2, "annotations": None},
        "progress": {
            "curated": 4,
            "tasks": 4,
            "labelled": 2,
            "labelled_share": 0.5,
            "annotations": 3,
            "classes": {EVIL: 2},
            "classes_count": "tasks",
            "annotators": {EVIL: 3},
        },
        "agreement": {
            "computed": True,
            "method": "cohen's kappa",
            "tasks": 1,
            "annotators": 2,
            "observed": 0.5,
            "kappa": 0.1,
            "disagreements": [
                {
                    "task_id": 1,
                    "url": f"http://shop/{EVIL}",
                    "row_id": "r",
                    "labels": {"1": EVIL, "2": "b"},
                }
            ],
        },
        "suspected_errors": {"computed": False, "reason": EVIL},
    }
    return [Path(write_labels(summary, tmp / "labels")["report"])]


def training_page(tmp: Path) -> list[Path]:
    test = evaluate(np.array([[0.9, 0.1], [0.2, 0.8]]), [EVIL, "y"], [EVIL, "y"])
    epoch = {
        "epoch": 1,
        "train_loss": 0.5,
        "val_loss": 0.6,
        "val_accuracy": 1.0,
        "val_macro_f1": 1.0,
        "lr": 0.1,
        "seconds": 1.0,
        "samples_per_s": 10.0,
    }
    summary = {
        "dataset": EVIL,
        "dataset_version": 3,
        "device": "cpu",
        "epochs": 1,
        "best_epoch": 1,
        "best_val_macro_f1": 1.0,
        "history": [epoch],
        "rows": {"train": 2, "validation": 2, "test": 2},
        "test": test,
        "baseline": {"test": test},
    }
    write_training(tmp / "model", summary)
    return [tmp / "model" / "report.html"]


def dashboard_page(tmp: Path) -> list[Path]:
    got = {
        "generated_at": "2024-05-01T10:00:00+00:00",
        "lake": EVIL,
        "history": "recorded",
        "sources": [
            {
                "source": EVIL,
                "pass_rates": [
                    {"at": "t", "curated": 1, "quarantined": 1, "rate": 0.5, "batch_status": EVIL}
                ],
                "labelling": {
                    "labelled": 1,
                    "curated": 2,
                    "labelled_share": 0.5,
                    "classes": {EVIL: 1},
                },
            }
        ],
        "runs": [{"id": 1, "source": EVIL, "status": EVIL, "error": EVIL}],
        "models": {"models": [{"model": EVIL, "version": 1, "headline": {EVIL: 0.5}}]},
    }
    path = tmp / "dashboard.html"
    path.write_text(dashboard.page(got), encoding="utf-8")
    return [path]


WRITERS = [validation_pages, drift_page, label_page, training_page, dashboard_page]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__)
def test_every_page_is_one_escaped_file_with_the_base_style(
    writer: Callable[[Path], list[Path]], tmp_path: Path
) -> None:
    for path in writer(tmp_path):
        page = path.read_text(encoding="utf-8")
        # one style block, the base's, and nothing the page has to fetch
        assert page.count("<style>") == 1 and BASE_CSS in page, path.name
        for src in re.findall(r"""\bsrc=["']?([^"' >]*)""", page):
            assert src.startswith("data:"), (path.name, src[:80])
        for link in re.findall(r"<link\b[^>]*>", page):
            assert 'href="data:' in link, (path.name, link)
        assert "url(" not in page and "@import" not in page
        # what the page shows is escaped; the dashboard's own script is the only one
        assert EVIL not in page and ESCAPED in page, path.name
        assert page.count("<script") == (1 if writer is dashboard_page else 0)


def test_no_page_template_shadows_the_base() -> None:
    for package in ("validation", "labeling", "training", "harvest.service"):
        folder = resources.files(package).joinpath("templates")
        names = {p.name for p in folder.iterdir()}
        assert names and not names & set(BASE_TEMPLATES), package
