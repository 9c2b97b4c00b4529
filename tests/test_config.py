from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harvest.config import Config, ConfigError, load_config
from tests.helpers import in_fresh_process


def test_defaults_run_the_demo(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "absent.toml", env={})
    assert cfg == Config()
    assert cfg.studio_url == "http://127.0.0.1:8089"
    assert cfg.studio_managed


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


def test_a_crawl_never_imports_the_remote_control_unless_its_recipe_turns_it_on() -> None:
    """Scrapy imports every extension its settings name, even one turned off; the remote
    control brings in aiohttp."""
    code = (
        "import sys\n"
        "from scrapy.utils.conf import build_component_list\n"
        "from harvest.config import Config\n"
        "from harvest.crawl import REMOTE_CONTROL, crawl_settings\n"
        "from spiders.recipe import load_recipe\n"
        "recipe = load_recipe('demo')\n"
        "def extensions():\n"
        "    s = crawl_settings(Config(), recipe, 'c')\n"
        "    return build_component_list(s.get_component_priority_dict_with_base('EXTENSIONS'))\n"
        "off = extensions()\n"
        "assert 'spiders.watchdog.Watchdog' in off and REMOTE_CONTROL not in off, off\n"
        "assert 'aiohttp' not in sys.modules\n"
        "recipe.settings['REMOTE_CONTROL_ENABLED'] = True\n"
        "on = extensions()\n"
        "assert REMOTE_CONTROL in on, on\n"
    )
    in_fresh_process(code)


def test_the_nearest_file_above_is_found_and_its_paths_start_from_its_folder(
    tmp_path: Path,
) -> None:
    from harvest.config import find_config

    (tmp_path / "harvest.toml").write_text('lake = "data/lake"\nreports = "/abs/reports"\n')
    below = tmp_path / "a" / "b"
    below.mkdir(parents=True)
    assert find_config({}, below) == tmp_path / "harvest.toml"
    cfg = load_config(tmp_path / "harvest.toml", env={"HARVEST_SOURCES": "mine"})
    assert cfg.lake == str(tmp_path / "data" / "lake")  # from the file's folder
    assert cfg.reports == "/abs/reports"  # absolute stays
    assert cfg.label_studio_data_dir == str(tmp_path / ".labelstudio")  # a default too
    assert cfg.sources == "mine"  # the environment's, as given
    assert find_config({}, Path("/")) is None or Path("/harvest.toml").is_file()


def test_config_named_by_the_command_line_or_environment(tmp_path: Path) -> None:
    from tests.helpers import last_json, run_harvest

    (tmp_path / "elsewhere.toml").write_text('lake = "l"\n')
    missing = run_harvest(["--config", str(tmp_path / "no.toml"), "status"], {}, check=False)
    assert missing.returncode == ConfigError.exit_code
    assert "no.toml, which is not a file" in missing.stderr
    shown = last_json(
        run_harvest(["status"], {"HARVEST_CONFIG": str(tmp_path / "elsewhere.toml")}).stdout
    )
    assert shown["lake"] == str(tmp_path / "l")
