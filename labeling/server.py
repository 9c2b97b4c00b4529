"""Starts and stops a real Label Studio server from its own virtual environment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from ingestion.errors import ConfigurationError, UnavailableError
from labeling.health import studio_down

# Label Studio refuses webhooks (and imports) to reserved addresses; the webhook receiver
# listens on loopback, so loopback is let through and every other reserved range stays
# refused (Label Studio's own list, core/utils/io.py validate_ip, less 127.0.0.0/8, ::1)
BANNED_SUBNETS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "233.252.0.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::ffff:0:0/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:0000::/32",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)


class LabelStudioError(UnavailableError):
    """Label Studio did not start or does not answer."""


class LabelStudioSetupError(ConfigurationError, LabelStudioError):
    """Label Studio cannot start as configured: not installed, its port taken, its token
    refused."""


@dataclass
class LabelStudioServer:
    """One Label Studio on loopback with its own data folder, admin user and API token."""

    executable: str
    data_dir: Path
    port: int
    username: str
    password: str
    token: str
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "label-studio.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "label-studio.pid"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            # Label Studio also reads these bare names; never let the shell's leak in
            if k not in {"USERNAME", "PASSWORD", "HOST", "PORT"}
        }
        env.update(
            LABEL_STUDIO_USERNAME=self.username,
            LABEL_STUDIO_PASSWORD=self.password,
            LABEL_STUDIO_USER_TOKEN=self.token,
            LABEL_STUDIO_LATEST_VERSION_CHECK="false",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            SENTRY_DSN="",
            FRONTEND_SENTRY_DSN="",
            LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS="false",
            LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS=",".join(BANNED_SUBNETS),
        )
        return env

    def start(self, timeout: float = 300.0) -> None:
        if not Path(self.executable).exists():
            raise LabelStudioSetupError(
                f"Label Studio is not installed at {self.executable}: run `make setup`"
            )
        if self.answers():
            raise LabelStudioSetupError(
                f"something already answers on {self.url}",
                hint="stop it (`harvest label stop` if it is ours) or set "
                "HARVEST_LABEL_STUDIO_PORT",
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.executable,
            "start",
            "--no-browser",
            "--internal-host",
            self.host,
            "-p",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "-db",
            str(self.data_dir / "ls.sqlite3"),
            "--enable-legacy-api-token",
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pid_path.write_text(str(self.process.pid))
        self.wait(timeout)

    def answers(self) -> bool:
        return studio_down(self.url) is None

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LabelStudioError(
                    f"Label Studio exited with {self.process.returncode}; see {self.log_path}"
                )
            if self.answers() and self._token_works():
                return
            time.sleep(1.0)
        self.stop()
        raise LabelStudioError(f"Label Studio did not answer on {self.url} within {timeout:.0f} s")

    def _token_works(self) -> bool:
        try:
            r = requests.get(
                f"{self.url}/api/current-user/whoami",
                headers={"Authorization": f"Token {self.token}"},
                timeout=5,
            )
        except requests.RequestException:
            return False
        if r.status_code == 401:
            raise LabelStudioSetupError(
                f"Label Studio at {self.url} refuses the configured API token; the token is set "
                f"only when {self.data_dir} is first created"
            )
        return r.status_code == 200

    def stop(self, timeout: float = 20.0) -> None:
        pid = self.process.pid if self.process else _read_pid(self.pid_path)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        self.pid_path.unlink(missing_ok=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
