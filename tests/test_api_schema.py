"""Schemathesis against the live service's OpenAPI document: whatever it sends, with the
token and without, no answer is a server error and every answer matches the document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harvest.demosite import DemoSite
from tests.service import Live, write_recipe

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,ignored_auth"
)


def test_document_names_the_token_on_every_change(tmp_path: Path) -> None:
    from harvest.config import load_config
    from harvest.service.app import create_app
    from harvest.service.serve import Service

    config = load_config(
        env={"HARVEST_LAKE": str(tmp_path / "lake"), "HARVEST_SOURCES": str(tmp_path)}
    )
    document = create_app(Service(config, label_studio=False)).openapi()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            secured = "security" in operation
            # the webhook has its own secret; reads are open
            assert secured == (method == "post" and path != "/webhooks/label-studio"), path


@pytest.mark.slow
def test_no_server_error_from_generated_requests(live: Live, demo_site: DemoSite) -> None:
    write_recipe(live.sources, "news", demo_site)
    live.start()
    document = live.get("/openapi.json").json()
    assert {
        "/crawls",
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/cancel",
        "/runs/{run_id}/log",
        "/runs/{run_id}/report",
        "/sources",
        "/datasets",
        "/datasets/{name}",
        "/exports",
        "/labels/{source}",
        "/models",
        "/models/{name}",
        "/predict",
        "/webhooks/label-studio",
    } <= set(document["paths"])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{live.url}/openapi.json",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--seed",
            "1",
            "--header",
            f"Authorization: Bearer {live.token}",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
        ],
        cwd=live.tmp,
        capture_output=True,
        text=True,
        timeout=240,  # its cache goes there
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "Tested: 18" in out, out[-3000:]
    assert live.get("/runs").status_code == 200
    assert live.stop() == 0
