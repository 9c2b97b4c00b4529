from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harvest.config import Config, ConfigError, load_config


def test_defaults_run_the_demo(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "absent.toml", env={})
    assert cfg == Config()
    assert cfg.label_studio_url == "http://127.0.0.1:8089"


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "harvest.toml"
    path.write_text('lake = "/data/lake"\n[label_studio]\nport = 9000\n[crawl]\nbatch_size = 50\n')
    cfg = load_config(path, env={"HARVEST_LABEL_STUDIO_PORT": "9100"})
    assert cfg.lake == "/data/lake"
    assert cfg.crawl_batch_size == 50
    assert cfg.label_studio_port == 9100


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "harvest.toml"
    path.write_text("[label_studio]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"harvest.toml: unknown key 'label_studio.prot'"):
        load_config(path, env={})


def test_bad_number_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="label_studio_port: expected a whole number"):
        load_config(tmp_path / "x.toml", env={"HARVEST_LABEL_STUDIO_PORT": "eighty"})


def test_secrets_come_from_env_or_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARVEST_LABEL_STUDIO_TOKEN", raising=False)
    cfg = Config(label_studio_data_dir=str(tmp_path / "ls"))
    token = cfg.label_studio_token
    assert token == cfg.label_studio_token  # kept, not regenerated
    mode = stat.S_IMODE(os.stat(tmp_path / "ls" / ".token").st_mode)
    assert mode == 0o600
    monkeypatch.setenv("HARVEST_LABEL_STUDIO_TOKEN", "from-env")
    assert cfg.label_studio_token == "from-env"


def test_proxies_from_config_reach_the_crawler(tmp_path: Path) -> None:
    from harvest.crawl import crawl_settings
    from spiders.recipe import load_recipe
    from tests.helpers import ROOT

    path = tmp_path / "harvest.toml"
    path.write_text('[crawl]\nproxy_file = "/etc/proxies.txt"\n')
    cfg = load_config(
        path, env={"HARVEST_CRAWL_PROXIES": "http://u:p@127.0.0.2:1,http://127.0.0.3:2"}
    )
    settings = crawl_settings(cfg, load_recipe("demo", ROOT / "sources"), "id")
    assert settings.getlist("HARVEST_PROXIES") == ["http://u:p@127.0.0.2:1", "http://127.0.0.3:2"]
    assert settings.get("HARVEST_PROXY_FILE") == "/etc/proxies.txt"
