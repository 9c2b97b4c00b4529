"""Label Studio that harvest does not start: over HTTPS, under a path prefix, its token
from the environment (``[label_studio] url``)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from harvest.config import Config, ConfigError
from ingestion.lake import Lake
from labeling.health import studio_down
from labeling.server import LabelStudioServer
from labeling.simulate import simulate
from labeling.sync import LabelSync
from tests.helpers import labelling_env, last_json, run_harvest, self_signed
from tests.test_labeling import CLASSES, rows

PREFIX = "/tools/label-studio"


class PrefixProxy:
    """Label Studio served over HTTPS under ``PREFIX``, as behind a company's reverse proxy:
    requests outside the prefix get 404."""

    def __init__(self, upstream: str, cert: Path, key: Path):
        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                if not self.path.startswith(PREFIX + "/"):
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                reply = requests.request(
                    self.command,
                    upstream + self.path[len(PREFIX) :],
                    data=self.rfile.read(length) if length else None,
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                    timeout=120,
                )
                body = reply.content
                self.send_response(reply.status_code)
                self.send_header("Content-Type", reply.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = forward  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}{PREFIX}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def remote(
    label_studio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PrefixProxy, Path]]:
    """The shared Label Studio behind ``PrefixProxy``, and the certificate to trust."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    proxy = PrefixProxy(label_studio.url, cert, key)
    try:
        yield proxy, cert
    finally:
        proxy.close()


def trusting(cert: Path) -> dict[str, str]:
    """The variables that make Python's, requests' and httpx's TLS trust ``cert``."""
    return {"SSL_CERT_FILE": str(cert), "REQUESTS_CA_BUNDLE": str(cert)}


@pytest.fixture
def remote_env(
    remote: tuple[PrefixProxy, Path], label_studio: LabelStudioServer, tmp_path: Path
) -> dict[str, str]:
    proxy, cert = remote
    return {
        **trusting(cert),
        **labelling_env(tmp_path, "remotepull", label_studio.token),
        "HARVEST_LABEL_STUDIO_URL": proxy.url + "/",
        # the managed server's port points nowhere: only the URL can reach Label Studio
        "HARVEST_LABEL_STUDIO_PORT": "9",
    }


@pytest.mark.slow
def test_labels_pulled_from_a_studio_over_https_under_a_prefix(
    remote: tuple[PrefixProxy, Path],
    label_studio: LabelStudioServer,
    remote_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    proxy, cert = remote
    for name, value in trusting(cert).items():
        monkeypatch.setenv(name, value)
    assert studio_down(proxy.url) is None
    assert "404" in (studio_down(proxy.url.removesuffix(PREFIX)) or "")
    direct = LabelSync(label_studio.url, label_studio.token, Lake(tmp_path / "direct"))
    project = direct.project("harvest remotepull", CLASSES)
    direct.push(project, rows(3))
    truth = {f"http://site/{i}": CLASSES[i] for i in range(3)}
    simulate(direct, project, truth, None)
    out = last_json(run_harvest(["label", "pull", "remotepull"], remote_env).stdout)
    assert (out["project_id"], out["labels"]) == (project, 3)
    # nothing was started, and no token was made up in the data folder
    assert not (tmp_path / "ls").exists()


def test_a_studio_elsewhere_needs_a_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARVEST_LABEL_STUDIO_TOKEN", raising=False)
    cfg = Config(label_studio_url="https://studio.example/ls", label_studio_data_dir=str(tmp_path))
    assert cfg.studio_url == "https://studio.example/ls" and not cfg.studio_managed
    with pytest.raises(ConfigError, match="set HARVEST_LABEL_STUDIO_TOKEN"):
        _ = cfg.label_studio_token
    assert list(tmp_path.iterdir()) == []  # no token made up


def test_label_serve_refuses_a_studio_it_does_not_start(tmp_path: Path) -> None:
    env = {"HARVEST_LABEL_STUDIO_URL": "https://studio.example/ls", "COLUMNS": "300"}
    proc = run_harvest(["label", "serve"], env, check=False)
    assert proc.returncode == 78
    assert "label_studio.url names https://studio.example/ls" in proc.stderr
