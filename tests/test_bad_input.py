"""Bad input to `harvest crawl` ends in one `error:` line naming it, before any request
where it can be known before, and with no traceback on stderr."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from harvest.demosite import DemoSite
from spiders.middlewares.proxypool import ProxyListError, checked, read_proxy_file, shown
from tests.helpers import ROOT, free_port, run_harvest

DEMO = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
SECRET, USER = "pa55-s3cret", "crawler-account"


def recipe(tmp_path: Path, site: DemoSite, **changes: object) -> Path:
    data = {**DEMO, "name": "bad", "start_urls": [site.url + "/"], **changes}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# exit codes (README): a bad flag 2, a site that does not answer 69, a recipe, setting or
# proxy list that cannot work 78
USAGE, UNAVAILABLE, CONFIG = 2, 69, 78


def fails(
    args: list[str], env: dict[str, str], site: DemoSite | None = None, *, code: int
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """The one `error:` line of a crawl that must fail with exit code ``code``, having
    sent the demo site no request."""
    before = len(site.requests) if site else 0
    proc = run_harvest(["crawl", *args, "--no-curate"], env, check=False)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    if site is not None:
        assert len(site.requests) == before
    return errors[0], proc


def test_a_start_url_that_does_not_parse_is_named_before_any_request(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    path = recipe(tmp_path, demo_site, start_urls=["http://127.0.0.1:99999/"])
    error, _ = fails([str(path)], lake_env, demo_site, code=CONFIG)
    assert f"{path}: start_urls[0]: " in error and "http://127.0.0.1:99999/" in error
    error, _ = fails(["demo", "--start-url", "http://[::1/"], lake_env, demo_site, code=USAGE)
    assert "start URL: " in error and "http://[::1/" in error


def test_a_setting_of_the_wrong_type_is_named_before_any_request(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    path = recipe(tmp_path, demo_site, settings={"CONCURRENT_REQUESTS": "many"})
    error, _ = fails([str(path)], lake_env, demo_site, code=CONFIG)
    assert f"{path}: settings.CONCURRENT_REQUESTS: a whole number, got 'many'" in error


def test_a_date_format_that_is_no_string_is_named_before_any_request(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    fields = {**DEMO["fields"]}
    fields["published"] = {**fields["published"], "format": 123}
    path = recipe(tmp_path, demo_site, fields=fields)
    error, _ = fails([str(path)], lake_env, demo_site, code=CONFIG)
    assert f"{path}: fields.published.format" in error
    assert not (Path(lake_env["HARVEST_LAKE"]) / "raw").exists()


def test_a_missing_proxy_file_is_named_before_any_request(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    missing = tmp_path / "proxies.txt"
    env = {**lake_env, "HARVEST_CRAWL_PROXY_FILE": str(missing)}
    error, _ = fails(["demo", "--start-url", demo_site.url + "/"], env, demo_site, code=CONFIG)
    assert f"proxy file {missing} (HARVEST_CRAWL_PROXY_FILE or crawl.proxy_file)" in error
    assert error.endswith("does not exist")


@pytest.mark.parametrize(
    ("proxy", "shows"),
    [
        (f"http://{USER}:{SECRET}@127.0.0.1:99999", "http://***@127.0.0.1:99999"),
        (f"http://{USER}:{SECRET}@127.0.0.1", "http://***@127.0.0.1"),
        (f"http://{USER}:{SECRET}", "http://***"),
        (f"{USER}:{SECRET}@127.0.0.1:3128", "***@127.0.0.1:3128"),
    ],
)
def test_a_malformed_proxy_url_is_named_without_its_credentials(
    demo_site: DemoSite, lake_env: dict[str, str], proxy: str, shows: str
) -> None:
    env = {**lake_env, "HARVEST_CRAWL_PROXIES": f"http://127.0.0.1:{free_port()},{proxy}"}
    error, proc = fails(["demo", "--start-url", demo_site.url + "/"], env, demo_site, code=CONFIG)
    assert f"HARVEST_CRAWL_PROXIES or crawl.proxies: proxy 2 ({shows}) is not a proxy URL" in error
    assert SECRET not in proc.stderr + proc.stdout and USER not in proc.stderr + proc.stdout


def test_a_start_url_that_refuses_connections_fails_before_the_crawl(
    lake_env: dict[str, str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    error, proc = fails(["demo", "--start-url", url], lake_env, code=UNAVAILABLE)
    assert error.startswith(f"error: crawl of demo got no response from {url}: ")
    assert "refused the connection, before the crawl started" in error
    # the crawl never started: no robots.txt fetched and retried, nothing logged
    assert "robots.txt" not in proc.stderr
    assert not (Path(lake_env["HARVEST_REPORTS"]) / "crawls").exists()


def test_an_error_inside_scrapy_is_one_line_and_its_traceback_is_in_the_log(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    settings = {"DOWNLOADER_MIDDLEWARES": {"harvest_no_such_module.Middleware": 100}}
    path = recipe(tmp_path, demo_site, settings=settings)
    error, _ = fails([str(path)], lake_env, demo_site, code=CONFIG)
    found = re.fullmatch(
        r"error: crawl of bad failed: ModuleNotFoundError: No module named "
        r"'harvest_no_such_module' \(log: (.+/crawls/bad-[\w-]+\.log)\)",
        error,
    )
    assert found, error
    log = Path(found.group(1))
    assert log.parent == Path(lake_env["HARVEST_REPORTS"]) / "crawls"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "harvest_no_such_module" in text


def test_a_crawl_with_no_response_names_the_cause_and_keeps_the_log(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    """Passes the checks before the crawl (a private address is not probed), then gets
    nothing: the error line says why instead of "finish reason unknown"."""
    path = recipe(tmp_path, demo_site, allow_private=False)
    error, _ = fails([str(path)], lake_env, demo_site, code=UNAVAILABLE)
    assert f"got no response from {demo_site.url}/: 127.0.0.1 is a private address" in error
    log = Path(error.rpartition("(log: ")[2].rstrip(")"))
    assert "Spider closed" in log.read_text()


# --- proxy lists, without a crawl --------------------------------------------------------


def test_a_proxy_file_names_the_line_of_a_bad_url(tmp_path: Path) -> None:
    path = tmp_path / "proxies.txt"
    path.write_text(f"# pool\nhttp://127.0.0.1:3128\n\nhttp://{USER}:{SECRET}@host:70000\n")
    with pytest.raises(ProxyListError) as info:
        read_proxy_file(path, "the recipe")
    message = str(info.value)
    assert message.startswith(f"proxy file {path} (the recipe), line 4 (http://***@host:70000)")
    assert message.endswith("port out of range 1-65535")
    assert SECRET not in message and USER not in message


def test_an_unreadable_proxy_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(ProxyListError, match=rf"proxy file {folder} cannot be read: Is a dir"):
        read_proxy_file(folder)
    binary = tmp_path / "latin1.txt"
    binary.write_bytes(b"http://caf\xe9:1\n")
    with pytest.raises(ProxyListError, match="cannot be read: not UTF-8 text"):
        read_proxy_file(binary)


def test_good_proxy_lists_pass() -> None:
    urls = [" http://u:p@127.0.0.2:1 ", "", "socks5h://[::1]:1080/", "https://proxy.example:443"]
    assert checked(urls, "x") == [u.strip() for u in urls if u.strip()]
    assert shown("http://u:p@[::1]:8080/x") == "http://***@[::1]:8080"
