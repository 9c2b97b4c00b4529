"""API recipes (``kind: api``) against the demo site's real JSON API, crawled by the real
command line: each paging style, each kind of credentials, throttles, 500s, a kill and a
resume, incremental crawls, and the secret kept out of logs and the lake. Rate limits,
failure rates, page sizes and kill points are drawn at random; the seed is printed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import yaml

from harvest.demosite import DemoApi, DemoSite, Guard, Site
from harvest.recipe import RecipeError, parse_recipe
from ingestion.lake import Lake
from ingestion.runs import CRAWL_STAGE, last_run
from tests import proxies
from tests.h2front import H2Front
from tests.helpers import ROOT, last_json, run_harvest, self_signed

TOKEN = "s3cr3t-" + os.urandom(6).hex()
ENV_NAME = "TEST_API_TOKEN"
LONGER_THAN_A_REQUEST = 60.0  # seconds a held page takes: past a request's 30 s deadline
PATHS = {
    "cursor": "/api/v1/articles",
    "page": "/api/v1/paged/articles",
    "offset": "/api/v1/offset/articles",
    "next": "/api/v1/next/articles",
    "link": "/api/v1/linked/articles",
}
AUTH = {
    "cursor": {"type": "bearer", "env": ENV_NAME},
    "page": {"type": "header", "env": ENV_NAME},
    "offset": {"type": "basic", "env": ENV_NAME},
    "next": {"type": "query", "env": ENV_NAME},  # the API echoes it in its next URLs
    "link": {"type": "query", "env": ENV_NAME, "name": "api_key"},
}


@pytest.fixture
def rng() -> random.Random:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    return random.Random(seed)


@pytest.fixture
def served(site: Site) -> Iterator[tuple[DemoSite, DemoApi]]:
    """A demo site of the test's own whose API the test shapes (``api.guard`` and so on)."""
    api = DemoApi(site, token=TOKEN)
    with DemoSite(site, api=api) as server:
        yield server, api


@pytest.fixture
def tinyproxies(tmp_path: Path) -> Iterator[list[proxies.TinyProxy]]:
    workdir = tmp_path / "proxies"
    workdir.mkdir()
    with proxies.running(2, workdir, auth={1: ("crawler", "proxy-pass")}) as started:
        yield started


def api_recipe(
    tmp_path: Path, name: str, style: str, size: int, settings: dict[str, Any] | None = None
) -> Path:
    data = yaml.safe_load((ROOT / "sources" / "demo_api.yaml").read_text())
    data.update(name=name, settings=settings or {})
    data["api"].update(paging={"style": style, "size": size}, auth=AUTH[style])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def env_for(tmp_path: Path, style: str = "cursor", batch: int = 100) -> dict[str, str]:
    token = f"demo:{TOKEN}" if AUTH[style]["type"] == "basic" else TOKEN
    return {
        "HARVEST_LAKE": str(tmp_path / "lake"),
        "HARVEST_REPORTS": str(tmp_path / "reports"),
        "HARVEST_CRAWL_BATCH_SIZE": str(batch),
        ENV_NAME: token,
    }


def crawl_args(recipe: Path, server: DemoSite, style: str) -> list[str]:
    return ["crawl", str(recipe), "--start-url", server.url + PATHS[style], "--no-curate"]


def raw_ids(tmp_path: Path, name: str) -> Counter[str]:
    raw = Lake(tmp_path / "lake").read(f"raw/{name}")
    return Counter(u.rsplit("/", 1)[1] for u in raw["url"].to_pylist())


def secret_absent(tmp_path: Path, *texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".yaml":
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("style", sorted(PATHS))
def test_every_paging_style_lands_each_record_once(
    tmp_path: Path, served: tuple[DemoSite, DemoApi], site: Site, style: str, rng: random.Random
) -> None:
    server, api = served
    api.guard = Guard(rng.randint(8, 30), 1.0, 0.0)
    api.fail_rate = rng.uniform(0.0, 0.1)
    api.slow_at, api.slow_seconds = rng.randrange(len(site.articles)), 0.5
    size = rng.randint(7, 30)
    # a page fails at most this many times in a row: 1e-6 at the highest failure rate
    recipe = api_recipe(tmp_path, f"api_{style}", style, size, {"RETRY_TIMES": 6})
    proc = run_harvest(crawl_args(recipe, server, style), env_for(tmp_path, style))
    summary = last_json(proc.stdout)
    ids = raw_ids(tmp_path, f"api_{style}")
    assert set(ids.values()) == {1}
    assert sorted(map(int, ids)) == list(range(1, len(site.articles) + 1))
    assert summary["account"]["given_up_total"] == 0  # type: ignore[index]
    raw = Lake(tmp_path / "lake").read(f"raw/api_{style}").to_pylist()
    first = next(r for r in raw if r["url"].endswith("/1"))
    article = site.articles[0]
    assert first["url"] == f"{server.url}/api/v1/articles/1"
    assert (first["title"], first["author"], first["tags"]) == (
        article.title,
        article.author,
        article.tags,
    )
    assert first["body"].startswith(article.paragraphs[0])
    failed = sum(status == 500 for _, _, status in api.log)
    assert summary["account"]["retries"] >= failed  # type: ignore[index]
    secret_absent(tmp_path, proc.stdout, proc.stderr)


def test_throttled_pages_are_paced_and_fetched(
    tmp_path: Path, served: tuple[DemoSite, DemoApi], site: Site, rng: random.Random
) -> None:
    server, api = served
    limit = rng.randint(3, 6)
    api.guard = Guard(limit, 1.0, 0.0)
    # more pages than the limit, asked for 16 at a time: the API must throttle
    recipe = api_recipe(tmp_path, "api_throttled", "offset", 10)
    data = yaml.safe_load(recipe.read_text())
    data["api"]["paging"]["total"] = "total"  # so nothing is asked for past the end
    recipe.write_text(yaml.safe_dump(data))
    proc = run_harvest(crawl_args(recipe, server, "offset"), env_for(tmp_path, "offset"))
    account = last_json(proc.stdout)["account"]
    assert account["throttled_responses"] >= 1  # type: ignore[index]
    assert account["throttled_responses"] == sum(s == 429 for _, _, s in api.log)  # type: ignore[index]
    assert account["given_up_total"] == 0  # type: ignore[index]
    ids = raw_ids(tmp_path, "api_throttled")
    assert len(ids) == len(site.articles) and set(ids.values()) == {1}
    offsets = [int(dict(parse_qsl(q))["offset"]) for _, q, _ in api.log if "offset=" in q]
    assert max(offsets) < len(site.articles)


def test_a_page_that_keeps_failing_is_given_up_and_fails_the_crawl(
    tmp_path: Path, served: tuple[DemoSite, DemoApi]
) -> None:
    server, _ = served
    recipe = api_recipe(tmp_path, "api_broken", "cursor", 20)
    server.failing[PATHS["cursor"]] = -1
    try:
        proc = run_harvest(
            crawl_args(recipe, server, "cursor"), env_for(tmp_path, "cursor"), check=False
        )
    finally:
        server.failing.clear()
    assert proc.returncode == 3, proc.stderr
    account = last_json(proc.stdout)["account"]
    assert account["given_up"] == {"http_500": 1}  # type: ignore[index]
    assert len(account["broken_chains"]) == 1  # type: ignore[index,arg-type]


@pytest.mark.parametrize("token", [None, "wrong"])
def test_missing_or_wrong_credentials_are_a_configuration_error(
    tmp_path: Path, served: tuple[DemoSite, DemoApi], token: str | None
) -> None:
    server, api = served
    recipe = api_recipe(tmp_path, "api_auth", "cursor", 20)
    env = env_for(tmp_path)
    if token is None:
        env[ENV_NAME] = ""
    else:
        env[ENV_NAME] = token
    proc = run_harvest(crawl_args(recipe, server, "cursor"), env, check=False)
    assert proc.returncode == 78, proc.stderr
    assert ENV_NAME in proc.stderr
    if token is None:
        assert "is not set" in proc.stderr and not api.log  # no request without them
    else:
        assert "answered 401" in proc.stderr and api.log[0][2] == 401
    assert not Lake(tmp_path / "lake").exists("raw/api_auth")


@pytest.mark.slow
@pytest.mark.parametrize("style", ["cursor", "page"])
def test_killed_crawl_resumes_from_its_last_committed_page(
    tmp_path: Path, served: tuple[DemoSite, DemoApi], site: Site, style: str, rng: random.Random
) -> None:
    server, api = served
    api.guard = Guard(4, 1.0, 0.0)  # commits spaced out
    # the last page outlasts a request's deadline: the crawl cannot end before the kill,
    # however its pacing goes (a retried page once held every commit, then all landed at once)
    api.slow_at, api.slow_seconds = len(site.articles) - 1, LONGER_THAN_A_REQUEST
    recipe = api_recipe(tmp_path, "api_resume", style, 5)
    env = env_for(tmp_path, style, batch=10)
    args = crawl_args(recipe, server, style)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lake = Lake(env["HARVEST_LAKE"])
    commits = rng.randint(1, 3)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (lake.version("raw/api_resume") or -1) < commits - 1:
        assert proc.poll() is None, "the crawl finished before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = lake.read("raw/api_resume")
    assert 10 <= before.num_rows < len(site.articles)
    api.slow_at = None
    asked_at_kill = len(api.log)

    summary = last_json(run_harvest(args, env).stdout)
    assert summary["resumed"] is True
    assert summary["crawl_id"] == before["crawl_id"][0].as_py()
    ids = raw_ids(tmp_path, "api_resume")
    assert len(ids) == len(site.articles) and set(ids.values()) == {1}
    # the resumed crawl began past the pages committed: never at the first page again
    first_query = api.log[asked_at_kill][1]
    assert ("cursor=" if style == "cursor" else "page=") in first_query
    assert "page=1&" not in first_query + "&"


@pytest.mark.slow
def test_sigterm_ends_the_crawl_with_its_account_and_it_resumes(
    tmp_path: Path, served: tuple[DemoSite, DemoApi], site: Site
) -> None:
    server, api = served
    api.guard = Guard(4, 1.0, 0.0)
    api.slow_at, api.slow_seconds = len(site.articles) - 1, LONGER_THAN_A_REQUEST
    recipe = api_recipe(tmp_path, "api_term", "cursor", 5)
    env = env_for(tmp_path, batch=5)
    args = crawl_args(recipe, server, "cursor")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lake = Lake(env["HARVEST_LAKE"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and lake.version("raw/api_term") is None:
        assert proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)  # a deadline, not a measurement
    summary = last_json(out)
    assert summary["finish_reason"] == "shutdown"
    assert "account:" in err
    run = last_run(lake, CRAWL_STAGE, "api_term")
    assert run is not None and run["state"] == "interrupted"
    api.slow_at = None
    again = last_json(run_harvest(args, env).stdout)
    assert again["resumed"] is True
    ids = raw_ids(tmp_path, "api_term")
    assert len(ids) == len(site.articles) and set(ids.values()) == {1}


def test_incremental_crawls_ask_only_past_the_high_water_mark(
    tmp_path: Path, served: tuple[DemoSite, DemoApi], site: Site, rng: random.Random
) -> None:
    server, api = served
    recipe = api_recipe(tmp_path, "api_since", "cursor", rng.randint(10, 40))
    env = env_for(tmp_path)
    args = crawl_args(recipe, server, "cursor")
    run_harvest(args, env)
    asked = len(api.log)
    added = api.add(rng.randint(1, 30))
    touched = rng.randrange(1, len(site.articles) + 1)
    api.touch(touched)
    second = last_json(run_harvest(args, env).stdout)
    assert second["rows_committed"] == len(added) + 1
    assert "since=" in api.log[asked][1]
    raw = Lake(env["HARVEST_LAKE"]).read("raw/api_since")
    crawl = [
        u
        for u, c in zip(raw["url"].to_pylist(), raw["crawl_id"].to_pylist(), strict=True)
        if c == second["crawl_id"]
    ]
    assert {u.rsplit("/", 1)[1] for u in crawl} == {str(r["id"]) for r in added} | {str(touched)}
    # nothing new: asked past the new mark, and nothing lands
    third = last_json(run_harvest(args, env).stdout)
    assert third["rows_committed"] == 0
    mark = max(r["updated_at"] for r in api.records)
    assert api.log[-1][1].startswith(urlencode({"since": mark}))
    # and the mark stays where it was for the next
    assert last_run(Lake(env["HARVEST_LAKE"]), CRAWL_STAGE, "api_since")["high_water"] == mark  # type: ignore[index]


def test_an_unchanged_collection_answers_304_to_the_last_etag(
    tmp_path: Path, served: tuple[DemoSite, DemoApi], rng: random.Random
) -> None:
    server, api = served
    recipe = api_recipe(tmp_path, "api_etag", "page", rng.randint(10, 40))
    data = yaml.safe_load(recipe.read_text())
    del data["api"]["since"]
    data["api"]["etag"] = True
    recipe.write_text(yaml.safe_dump(data))
    env = env_for(tmp_path, "page")
    args = crawl_args(recipe, server, "page")
    run_harvest(args, env)
    again = last_json(run_harvest(args, env).stdout)
    assert (again["rows_committed"], again["account"]["unchanged"]) == (0, 1)  # type: ignore[index]
    assert api.log[-1][2] == 304
    api.add(1)
    third = last_json(run_harvest(args, env).stdout)
    assert third["rows_committed"] == len(api.records)  # no since: the whole collection again


def test_an_api_crawl_goes_through_the_recipes_proxies(
    tmp_path: Path,
    served: tuple[DemoSite, DemoApi],
    site: Site,
    tinyproxies: list[proxies.TinyProxy],
) -> None:
    server, api = served
    api.guard = Guard(1000, 1.0, 0.0)  # no limit to speak of: it notes who asked
    recipe = api_recipe(tmp_path, "api_proxied", "page", 10)
    data = yaml.safe_load(recipe.read_text())
    data["proxies"] = [p.url for p in tinyproxies]
    recipe.write_text(yaml.safe_dump(data))
    proc = run_harvest(crawl_args(recipe, server, "page"), env_for(tmp_path, "page"))
    account = last_json(proc.stdout)["account"]
    ids = raw_ids(tmp_path, "api_proxied")
    assert len(ids) == len(site.articles) and set(ids.values()) == {1}
    # the API saw only the proxies' own addresses, and the account names only them
    assert {address for _, address, _ in api.guard.answers} <= {p.bind for p in tinyproxies}
    assert set(account["exits"]) <= {p.name for p in tinyproxies}  # type: ignore[arg-type]
    assert "proxy-pass" not in proc.stdout + proc.stderr


def test_an_api_that_offers_http2_over_tls_is_crawled_over_it(
    tmp_path: Path, served: tuple[DemoSite, DemoApi], site: Site, rng: random.Random
) -> None:
    """Through a TLS front that offers h2 by ALPN, with its own certificate authority
    named by SSL_CERT_FILE, as an internal API's would be."""
    server, api = served
    api.guard = Guard(1000, 1.0, 0.0)
    cert, key = self_signed(tmp_path)
    front = H2Front(server.url, cert, key)
    try:
        size = rng.randint(7, 30)
        recipe = api_recipe(tmp_path, "api_h2", "cursor", size)
        args = ["crawl", str(recipe), "--start-url", front.url + PATHS["cursor"], "--no-curate"]
        untrusted = run_harvest(args, env_for(tmp_path / "untrusted"), check=False)
        proc = run_harvest(args, {**env_for(tmp_path), "SSL_CERT_FILE": str(cert)})
    finally:
        front.close()
    # without the authority: a clear error that names the certificate, not a bare ConnectError
    assert untrusted.returncode != 0 and "certificate verify failed" in untrusted.stderr
    ids = raw_ids(tmp_path, "api_h2")
    assert len(ids) == len(site.articles) and set(ids.values()) == {1}
    assert front.protocols and set(front.protocols) == {"h2"}
    assert front.streams >= -(-len(site.articles) // size)  # every page came over HTTP/2
    assert last_json(proc.stdout)["account"]["given_up_total"] == 0  # type: ignore[index]


@pytest.mark.parametrize("style", ["cursor", "offset"])
def test_limits_pages_ends_the_crawl_after_that_many_pages(
    tmp_path: Path, served: tuple[DemoSite, DemoApi], style: str, rng: random.Random
) -> None:
    server, _ = served
    pages, size = rng.randint(1, 5), rng.randint(5, 15)
    recipe = api_recipe(tmp_path, "api_pages", style, size)
    args = crawl_args(recipe, server, style)
    if rng.random() < 0.5:  # the recipe's limit, or harvest crawl --pages
        data = yaml.safe_load(recipe.read_text())
        data["limits"] = {"pages": pages}
        recipe.write_text(yaml.safe_dump(data))
    else:
        args += ["--pages", str(pages)]
    summary = last_json(run_harvest(args, env_for(tmp_path, style)).stdout)
    assert summary["finish_reason"] == "closespider_pagecount"
    assert summary["rows_committed"] == pages * size
    run = last_run(Lake(tmp_path / "lake"), CRAWL_STAGE, "api_pages")
    assert run is not None and run["state"] == "finished"  # not resumed by the next crawl


@pytest.mark.slow
def test_an_api_source_goes_through_the_gate_like_any_other(
    tmp_path: Path, served: tuple[DemoSite, DemoApi], site: Site
) -> None:
    server, _ = served
    recipe = api_recipe(tmp_path, "api_gate", "cursor", 50)
    args = crawl_args(recipe, server, "cursor")[:-1]  # and curate
    summary = last_json(run_harvest(args, env_for(tmp_path)).stdout)
    planted = (site.planted_invalid, site.planted_duplicates, site.planted_near_duplicates)
    assert summary["quarantined"] == len(site.planted_invalid)
    assert summary["curated"] == len(site.articles) - sum(len(p) for p in planted)


def test_recipe_kinds_take_their_own_keys(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "sources" / "demo_api.yaml").read_text())
    assert parse_recipe(data, "demo_api.yaml").kind == "api"
    html = {**data, "kind": "html"}
    with pytest.raises(RecipeError) as found:
        parse_recipe(html, "x.yaml")
    assert "api: only a recipe of kind: api" in str(found.value)
    assert "fields.title.path: only a field of kind: api" in str(found.value)
    bad = {**data, "api": {"records": "$.data[", "id": "id", "paging": {"style": "scroll"}}}
    with pytest.raises(RecipeError) as found:
        parse_recipe(bad, "x.yaml")
    assert "api.records: not a dotted or JSONPath path" in str(found.value)
    assert "api.paging.style: one of cursor" in str(found.value)
    missing = {k: v for k, v in data.items() if k != "api"}
    with pytest.raises(RecipeError, match="api: required for kind: api"):
        parse_recipe(missing, "x.yaml")
