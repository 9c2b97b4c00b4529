"""Configuration: ``harvest.toml`` (every key optional), then ``HARVEST_*`` environment variables.

The file is the one ``--config`` or ``HARVEST_CONFIG`` names, else the first
``harvest.toml`` found walking up from the current folder, as Scrapy finds ``scrapy.cfg``.
Relative paths in force under a file (its own and the defaults) are taken from the file's
folder, so a command run from anywhere below it means the same lake; paths from the
environment are taken as they are.

Secrets (the Label Studio token and password, the webhook secret) come from the environment
only; when unset, one is generated on first use and kept, readable by the owner alone, in the
data folder.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ingestion.errors import ConfigurationError


class ConfigError(ConfigurationError):
    hint = "fix it in harvest.toml or in its HARVEST_* environment variable"


@dataclass
class Config:
    lake: str = "lake"
    reports: str = "reports"
    sources: str = "sources"
    # labelling models, one folder per source; empty: "models" beside a local lake
    models: str = ""
    # MLflow tracking and model registry; empty: a SQLite file in "mlflow" beside a local lake
    tracking_uri: str = ""
    crawl_batch_size: int = 100
    # proxies for sources whose recipe lists none: a file of URLs, one a line; URLs with
    # passwords belong in the environment (HARVEST_CRAWL_PROXIES, comma-separated)
    crawl_proxies: str = ""
    crawl_proxy_file: str = ""
    # a Label Studio that harvest does not start: http or https, any host, with or
    # without a path prefix; its token comes from HARVEST_LABEL_STUDIO_TOKEN. Empty: the
    # managed local one at label_studio_host:label_studio_port
    label_studio_url: str = ""
    label_studio_host: str = "127.0.0.1"
    label_studio_port: int = 8089
    label_studio_data_dir: str = ".labelstudio"
    label_studio_username: str = "admin@harvest.local"
    label_studio_executable: str = ".venv-labelstudio/bin/label-studio"
    # the address at which Label Studio's webhooks reach `harvest serve`, and its notices
    # link to (empty: the address it listens on); set it when Label Studio runs elsewhere
    serve_public_url: str = ""
    # names `harvest serve` answers to (Host header) besides loopback and the address it
    # listens on, comma-separated; "*" for any, only behind a proxy that checks the name
    allowed_hosts: str = ""
    # the model `POST /predict` scores with when a request names none (empty: the only
    # one `harvest train` registered)
    serve_model: str = ""
    # the share of `POST /predict` answers kept in predictions/<model>, and whether with
    # their text (otherwise its hash and length only)
    serve_log_sample: float = 1.0
    serve_log_text: bool = False
    # seconds between drift checks of the logged predictions (0: none; `harvest monitor`)
    serve_monitor_every: float = 60.0
    # where `harvest serve` posts a failed or timed-out run as JSON (empty: nowhere); a URL
    # with a secret in it belongs in the environment (HARVEST_NOTIFY_WEBHOOK)
    notify_webhook: str = ""
    notify_timeout: float = 10.0
    # the MLflow UI the dashboard links to (empty: the tracking URI, when it is http(s))
    mlflow_url: str = ""

    @property
    def models_dir(self) -> str:
        if self.models:
            return self.models
        if "://" in self.lake:
            return "models"
        return str(Path(self.lake).parent / "models")

    @property
    def tracking(self) -> str:
        """The MLflow tracking (and registry) URI in force."""
        if self.tracking_uri:
            return self.tracking_uri
        base = Path("mlflow") if "://" in self.lake else Path(self.lake).parent / "mlflow"
        # absolute, so a command run from another folder finds the same store
        return f"sqlite:///{(base / 'mlflow.db').resolve()}"

    @property
    def studio_url(self) -> str:
        """The Label Studio in use: ``label_studio_url``, else the managed local one."""
        if self.label_studio_url:
            return self.label_studio_url.rstrip("/")
        return f"http://{self.label_studio_host}:{self.label_studio_port}"

    @property
    def studio_managed(self) -> bool:
        """Whether harvest starts and stops the Label Studio it uses."""
        return not self.label_studio_url

    @property
    def label_studio_token(self) -> str:
        path = Path(self.label_studio_data_dir) / ".token"
        if not self.studio_managed and not os.environ.get(TOKEN) and not path.exists():
            # a token made up here would mean nothing to a server that harvest did not start
            raise ConfigError(
                f"label_studio.url names {self.studio_url}, which harvest does not start: set "
                f"{TOKEN} to an access token of that server (its Account & Settings page)"
            )
        return _secret(TOKEN, path)

    @property
    def label_studio_password(self) -> str:
        return _secret(
            "HARVEST_LABEL_STUDIO_PASSWORD", Path(self.label_studio_data_dir) / ".password"
        )

    @property
    def webhook_secret(self) -> str:
        """What Label Studio's webhooks must send (Authorization: Bearer SECRET)."""
        return _secret(
            "HARVEST_WEBHOOK_SECRET", Path(self.label_studio_data_dir) / ".webhook_secret"
        )


TOKEN = "HARVEST_LABEL_STUDIO_TOKEN"


def _secret(env: str, path: Path) -> str:
    if os.environ.get(env):
        return os.environ[env]
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


FILE = "harvest.toml"
# the settings that are paths: relative ones under a config file start from its folder
PATHS = (
    "lake",
    "reports",
    "sources",
    "models",
    "label_studio_data_dir",
    "label_studio_executable",
    "crawl_proxy_file",
)


def find_config(env: dict[str, str] | None = None, start: Path | None = None) -> Path | None:
    """The file ``HARVEST_CONFIG`` names, else the nearest ``harvest.toml`` at or above
    ``start`` (the current folder); None when there is none."""
    env = dict(os.environ if env is None else env)
    named = env.get("HARVEST_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"--config / HARVEST_CONFIG names {named}, which is not a file")
        return path
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / FILE).is_file():
            return folder / FILE
    return None


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """The configuration in force: ``path`` (default: ``find_config``), then the
    environment."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    path = find_config(env) if path is None else Path(path)
    if path is not None and path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        values.update(_flatten(path, raw))
        folder = path.resolve().parent
        for name in PATHS:
            value = values.get(name, getattr(Config, name))
            if isinstance(value, str) and value and "://" not in value:
                values[name] = str(folder / value)  # an absolute value stays as it is
    types = {f.name: f.type for f in fields(Config)}
    for name in types:
        key = f"HARVEST_{name.upper()}"
        if key in env:
            values[name] = env[key]
    for name, value in values.items():
        want = types[name]
        if want in ("int", int):
            try:
                values[name] = int(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{name}: expected a whole number, got {value!r}") from exc
        elif want in ("float", float):
            try:
                values[name] = float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{name}: expected a number, got {value!r}") from exc
        elif want in ("bool", bool):
            values[name] = _flag(name, value)
        elif not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
    return Config(**values)


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def _flatten(path: Path, raw: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    known = {f.name for f in fields(Config)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        keys = (*prefix, key)
        name = "_".join(keys).replace("-", "_")
        if isinstance(value, dict):
            out.update(_flatten(path, value, keys))
        elif name in known:
            out[name] = value
        else:
            raise ConfigError(f"{path}: unknown key {'.'.join(keys)!r}")
    return out
