from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harvest.demosite import DemoSite
from harvest.recipe import RecipeError, list_recipes, load_recipe
from ingestion.schema import LAKE_COLUMNS
from tests.helpers import ROOT, run_harvest

GOOD = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())


def write(tmp_path: Path, recipe: dict[str, object]) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def mutate(**changes: object) -> dict[str, object]:
    recipe = yaml.safe_load(yaml.safe_dump(GOOD))
    for key, value in changes.items():
        target = recipe
        *parents, leaf = key.split("__")
        for p in parents:
            target = target[p]
        if value is None:
            del target[leaf]
        else:
            target[leaf] = value
    return recipe


def test_demo_recipe_loads() -> None:
    recipe = load_recipe("demo", ROOT / "sources")
    assert recipe.name == "demo"
    assert recipe.text_field == "body"
    assert recipe.fields["published"].type == "date"
    assert recipe.labels == ["World", "Sports", "Business", "Sci/Tech"]
    assert recipe.label_type == "single"  # the default
    # none named: the labelling model reads what it reads by default (features.DEFAULT)
    assert recipe.label_features is None


def test_label_type_is_one_of_labelings_task_types() -> None:
    from harvest.recipe import parse_recipe
    from labeling.tasktypes import TASK_TYPES

    for kind in TASK_TYPES:
        assert parse_recipe(mutate(label_type=kind), "x.yaml").label_type == kind
    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(label_type="tree"), "x.yaml")
    assert info.value.problems == [("label_type", f"one of {', '.join(TASK_TYPES)}, got 'tree'")]


def test_label_features_are_those_the_labelling_model_knows() -> None:
    from harvest.recipe import parse_recipe
    from labeling.features import KINDS

    for kind in KINDS:
        assert parse_recipe(mutate(label_features=kind), "x.yaml").label_features == kind
    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(label_features="bert"), "x.yaml")
    assert info.value.problems == [("label_features", f"one of {', '.join(KINDS)}, got 'bert'")]


def test_a_scheduled_push_takes_one_of_labelings_strategies() -> None:
    from harvest.recipe import parse_recipe
    from labeling.strategies import STRATEGIES

    for name in STRATEGIES:
        schedule = {"cron": "* * * * *", "label": {"push": 5, "strategy": name}}
        s = parse_recipe(mutate(schedule=schedule), "x.yaml").schedule
        assert s is not None and (s.push, s.strategy) == (5, name)
    with pytest.raises(RecipeError) as info:
        schedule = {"cron": "* * * * *", "label": {"push": 5, "strategy": "guess"}}
        parse_recipe(mutate(schedule=schedule), "x.yaml")
    assert info.value.problems == [
        ("schedule.label.strategy", f"one of {', '.join(STRATEGIES)}, got 'guess'")
    ]


@pytest.mark.parametrize(
    ("recipe", "key", "words"),
    [
        (mutate(colour="blue"), "colour", "unknown key"),
        (mutate(start_urls=None), "start_urls", "required"),
        (mutate(start_urls=["ftp://x"]), "start_urls[0]", "not an http(s) URL"),
        (mutate(fields__title={"css": "h1..title::text"}), "fields.title.css", "does not parse"),
        (mutate(fields__title={"xpath": "//h1[", "type": "str"}), "fields.title.xpath", "parse"),
        (
            mutate(fields__title={"css": "h1", "type": "datetime"}),
            "fields.title.type",
            "unknown type",
        ),
        (mutate(fields__title={"css": "h1", "colour": 1}), "fields.title.colour", "unknown key"),
        (mutate(follow=[{"allow": "(unclosed"}]), "follow[0].allow", "does not compile"),
        (
            mutate(expectations=[{"expect": "sparkles", "column": "body"}]),
            "expectations[0].expect",
            "unknown",
        ),
        (
            mutate(expectations=[{"expect": "not_null", "column": "nope"}]),
            "expectations[0].column",
            "not a field",
        ),
        (mutate(text_field="nope"), "text_field", "not one of the fields"),
        (mutate(label_type="tree"), "label_type", "one of single, multi, spans"),
        (mutate(label_type=["multi"]), "label_type", "one of single, multi, spans"),
        (mutate(label_features="bert"), "label_features", "one of tfidf, tfidf+minilm"),
    ],
)
def test_broken_recipe_names_file_and_key(
    tmp_path: Path, recipe: dict[str, object], key: str, words: str
) -> None:
    path = write(tmp_path, recipe)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.key == key
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_unknown_source_lists_the_known_ones() -> None:
    with pytest.raises(RecipeError, match="known: demo"):
        load_recipe("nosuch", ROOT / "sources")


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="bad.yaml: yaml"):
        load_recipe(path)


def test_licence_is_an_optional_note() -> None:
    from harvest.recipe import parse_recipe

    assert parse_recipe(mutate(), "x.yaml").licence is None
    assert parse_recipe(mutate(licence=" CC BY 4.0 "), "x.yaml").licence == "CC BY 4.0"
    with pytest.raises(RecipeError, match="x.yaml: licence: a note of the terms"):
        parse_recipe(mutate(licence=["CC BY"]), "x.yaml")


def test_broken_recipe_fails_before_any_request(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    recipe = mutate(fields__body={"css": "div.body >>> p", "type": "text"})
    recipe["start_urls"] = [demo_site.url + "/?broken-recipe"]
    path = write(tmp_path, recipe)
    before = len(demo_site.hits)
    proc = run_harvest(["crawl", str(path)], lake_env, check=False)
    assert proc.returncode == 78  # a recipe that cannot work (README: exit codes)
    assert f"{path}: fields.body.css" in proc.stderr
    assert len(demo_site.hits) == before
    assert not (Path(lake_env["HARVEST_LAKE"]) / "raw").exists()


def test_crawling_options_parse() -> None:
    recipe = mutate(
        render="browser",
        browser={"wait_for": "div.body", "wait_until": "networkidle", "block": ["image"]},
        proxies=["http://user:secret@127.0.0.2:8888"],
        ban={"statuses": [429], "markers": ["captcha"]},
    )
    from harvest.recipe import parse_recipe

    r = parse_recipe(recipe, "x.yaml")
    assert r.renders and r.browser.wait_for == "div.body" and r.browser.block == ("image",)
    assert r.proxies.urls == ("http://user:secret@127.0.0.2:8888",)
    assert r.ban.statuses == (429,)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"render": "telepathy"}, "render"),
        ({"browser": {"wait_until": "forever"}}, "browser.wait_until"),
        ({"browser": {"block": ["pictures"]}}, "browser.block[0]"),
        ({"browser": {"wait_for": "div..x"}}, "browser.wait_for"),
        ({"proxies": ["user:secret@host"]}, "proxies.urls[0]"),
        ({"ban": {"statuses": [999]}}, "ban.statuses[0]"),
        ({"ban": {"backoff_base": -1}}, "ban.backoff_base"),
    ],
)
def test_broken_crawling_options_are_named(changes: dict[str, object], key: str) -> None:
    from harvest.recipe import parse_recipe

    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(**changes), "x.yaml")
    assert info.value.key == key
    assert "secret" not in str(info.value)


def test_schedule_is_optional_and_parses() -> None:
    from apscheduler.triggers.cron import CronTrigger

    from harvest.recipe import parse_recipe

    assert parse_recipe(mutate(), "x.yaml").schedule is None
    raw = {
        "cron": "*/5 * * * 1-5",
        "timezone": "Europe/Paris",
        "label": {"push": 200, "strategy": "entropy"},
        "retrain": True,
    }
    s = parse_recipe(mutate(schedule=raw), "x.yaml").schedule
    assert s is not None
    assert (s.cron, s.timezone, s.push, s.strategy, s.retrain) == (
        "*/5 * * * 1-5",
        "Europe/Paris",
        200,
        "entropy",
        True,
    )
    # crontab's 1-5 is Monday to Friday; the scheduler counts weekdays from Monday
    assert s.fields() == {
        "second": "0",
        "minute": "*/5",
        "hour": "*",
        "day": "*",
        "month": "*",
        "day_of_week": "mon,tue,wed,thu,fri",
    }
    trigger = CronTrigger(**s.fields(), timezone="UTC")
    from datetime import UTC, datetime

    # Saturday 2026-01-03 12:00 UTC: the next slot is Monday at midnight
    assert trigger.get_next_fire_time(None, datetime(2026, 1, 3, 12, tzinfo=UTC)) == datetime(
        2026, 1, 5, tzinfo=UTC
    )
    six = parse_recipe(mutate(schedule={"cron": "*/3 * * * * 0,7"}), "x.yaml").schedule
    assert six is not None and six.fields()["second"] == "*/3"
    assert six.fields()["day_of_week"] == "sun"


@pytest.mark.parametrize(
    ("schedule", "key"),
    [
        ("hourly", "schedule"),
        ({"cron": "* * *"}, "schedule.cron"),
        ({"cron": "61 * * * *"}, "schedule.cron"),
        ({"cron": "* * * * 8"}, "schedule.cron"),
        ({"timezone": "Europe/Paris"}, "schedule.cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "schedule.timezone"),
        ({"cron": "* * * * *", "label": {"push": 0}}, "schedule.label.push"),
        (
            {"cron": "* * * * *", "label": {"push": 5, "strategy": "guess"}},
            "schedule.label.strategy",
        ),
        ({"cron": "* * * * *", "retrain": "yes"}, "schedule.retrain"),
        ({"cron": "* * * * *", "time_limit": 0}, "schedule.time_limit"),
        ({"cron": "* * * * *", "every": 5}, "schedule.every"),
    ],
)
def test_broken_schedule_is_named(schedule: object, key: str) -> None:
    from harvest.recipe import parse_recipe

    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(schedule=schedule), "x.yaml")
    assert info.value.key == key
    assert str(info.value).startswith("x.yaml: " + key)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:99999/", "Port out of range"),
        ("http://[::1/", "Invalid IPv6 URL"),
        ("http://127.0.0.1:0/", "port out of range 1-65535"),
        ("http://host:eighty/", "not a valid URL"),
        ("http:///path", "no host name"),
        ("http://exa mple.com/", "no host name"),
        ("mailto:someone@example.com", "not an http(s) URL"),
    ],
)
def test_start_urls_are_parsed_in_full(url: str, words: str) -> None:
    from harvest.recipe import parse_recipe

    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(start_urls=["http://example.com/", url]), "x.yaml")
    assert info.value.key == "start_urls[1]"
    assert words in str(info.value) and repr(url) in str(info.value)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"CONCURRENT_REQUESTS": "many"}, "a whole number, got 'many'"),
        ({"CONCURRENT_REQUESTS": 2.5}, "a whole number"),
        ({"CONCURRENT_REQUESTS": True}, "a whole number"),
        ({"DOWNLOAD_DELAY": "slow"}, "a number"),
        ({"AUTOTHROTTLE_TARGET_CONCURRENCY": None}, "a number"),
        ({"ROBOTSTXT_OBEY": "yes"}, "true or false"),
        ({"DEFAULT_REQUEST_HEADERS": ["Accept: */*"]}, "a mapping"),
        ({"RETRY_HTTP_CODES": 500}, "a list"),
        ({"LOG_LEVEL": "LOUD"}, "one of DEBUG, INFO"),
        ({"CONCURENT_REQUESTS": 4}, "not a Scrapy setting (did you mean CONCURRENT_REQUESTS?)"),
        ({"ZZZZ": 1}, "not a Scrapy setting"),
    ],
)
def test_settings_take_the_type_of_scrapys_default(settings: dict[str, object], words: str) -> None:
    from harvest.recipe import parse_recipe

    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(settings=settings), "x.yaml")
    assert info.value.key == f"settings.{next(iter(settings))}"
    assert words in str(info.value)


def test_settings_of_the_right_type_and_harvests_own_pass() -> None:
    from harvest.recipe import parse_recipe

    settings = {
        "CONCURRENT_REQUESTS": 4,
        "DOWNLOAD_DELAY": 0.25,  # a whole-number default that Scrapy reads as a float
        "DOWNLOAD_TIMEOUT": 10,
        "AUTOTHROTTLE_TARGET_CONCURRENCY": 2,  # an int where a float is due is a number
        "ROBOTSTXT_OBEY": False,
        "TELNETCONSOLE_ENABLED": False,
        "DEFAULT_REQUEST_HEADERS": {"Accept-Language": "en"},
        "RETRY_HTTP_CODES": [500, 503],
        "USER_AGENT": "harvest-test",
        "LOG_LEVEL": "DEBUG",
        "HARVEST_LISTING_BACKOFF": 0.5,
        "PLAYWRIGHT_MAX_PAGES_PER_CONTEXT": 2,
    }
    assert parse_recipe(mutate(settings=settings), "x.yaml").settings == settings


@pytest.mark.parametrize("column", sorted(LAKE_COLUMNS))
def test_a_field_may_not_take_a_column_the_lake_writes(column: str) -> None:
    from harvest.recipe import parse_recipe

    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(**{f"fields__{column}": {"css": "a::attr(href)"}}), "x.yaml")
    assert info.value.key == f"fields.{column}"
    assert "a column the lake adds to every row" in str(info.value)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"fields__published__format": 123}, "fields.published.format"),
        ({"fields__published__format": "Y-m-d"}, "fields.published.format"),
        ({"fields__title__format": "%Y"}, "fields.title.format"),
        (
            {"expectations": [{"expect": "date_parses", "column": "published", "format": 5}]},
            "expectations[0].format",
        ),
    ],
)
def test_a_date_format_is_a_strptime_string(changes: dict[str, object], key: str) -> None:
    from harvest.recipe import parse_recipe

    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(**changes), "x.yaml")
    assert info.value.key == key


def test_every_problem_is_named_in_one_line() -> None:
    from harvest.recipe import parse_recipe

    recipe = mutate(
        start_urls=["http://127.0.0.1:99999/"],
        settings={"CONCURRENT_REQUESTS": "many"},
        fields__url={"css": "a::attr(href)"},
        fields__published__format=123,
        label_type="tree",
    )
    with pytest.raises(RecipeError) as info:
        parse_recipe(recipe, "x.yaml")
    keys = [key for key, _ in info.value.problems]
    # section by section (the crawl's, then the labels'), each in the order of its keys
    assert keys == [
        "start_urls[0]",
        "fields.published.format",
        "fields.url",
        "settings.CONCURRENT_REQUESTS",
        "label_type",
    ]
    message = str(info.value)
    assert "\n" not in message and message.startswith("x.yaml: start_urls[0]: ")
    assert all(f"; {key}: " in message for key in keys[1:])


def test_a_problem_is_not_named_again_by_what_depends_on_it() -> None:
    from harvest.recipe import parse_recipe

    # without fields, the text field, expectations and batch gates cannot be checked
    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(fields=None, batch={"min_rows_ratio": 0.5}), "x.yaml")
    assert info.value.problems == [("fields", "required: a mapping of field name to selector")]


def test_a_proxy_url_with_a_bad_port_is_refused_without_its_password() -> None:
    from harvest.recipe import parse_recipe

    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(proxies=["http://user:secret@127.0.0.2:99999"]), "x.yaml")
    assert info.value.key == "proxies.urls[0]"
    assert "port out of range" in str(info.value) and "secret" not in str(info.value)


def test_yml_recipes_are_listed_beside_yaml_ones(tmp_path: Path) -> None:
    """`label pull` and `label webhook` list recipes through stages.all_recipes, as `crawl`
    and `serve` do: a `.yml` recipe is as much a source as a `.yaml` one."""
    from harvest import stages
    from harvest.config import Config

    sources = tmp_path / "sources"
    sources.mkdir()
    for name, suffix in [("a", ".yaml"), ("b", ".yml"), ("c", ".yaml"), ("c", ".yml")]:
        (sources / f"{name}{suffix}").write_text(yaml.safe_dump({**GOOD, "name": name}))
    (sources / "notes.txt").write_text("not a recipe")
    # one file a name, the one a name finds (.yaml first)
    assert [p.name for p in list_recipes(sources)] == ["a.yaml", "b.yml", "c.yaml"]
    found = stages.all_recipes(Config(sources=str(sources)))
    assert [r.name for r in found] == ["a", "b", "c"]
    assert load_recipe("b", sources).name == "b"


def test_allowed_domains_default_to_the_start_urls_hosts() -> None:
    from harvest.recipe import parse_recipe

    urls = ["http://News.example.com:8080/a", "https://news.example.com/b", "http://[::1]:9/"]
    recipe = parse_recipe(mutate(allowed_domains=None, start_urls=urls), "x.yaml")
    assert recipe.allowed_domains is None
    # host names only: Scrapy matches them, and their subdomains, without the port
    assert recipe.domains() == ["news.example.com", "::1"]
    # a crawl started elsewhere stays on the host it starts from
    assert recipe.domains(["http://127.0.0.1:8765/"]) == ["127.0.0.1"]


def test_allowed_domains_named_in_the_recipe_are_kept() -> None:
    from harvest.recipe import parse_recipe

    named = parse_recipe(mutate(allowed_domains=["example.org"]), "x.yaml")
    assert named.domains() == named.domains(["http://127.0.0.1/"]) == ["example.org"]
    # an empty list is Scrapy's "any host", for a recipe that means it
    assert parse_recipe(mutate(allowed_domains=[]), "x.yaml").domains() == []


def test_the_spider_stays_on_the_hosts_it_starts_from() -> None:
    from harvest.recipe import parse_recipe
    from spiders.recipe_spider import RecipeSpider

    recipe = parse_recipe(mutate(allowed_domains=None), "x.yaml")
    assert RecipeSpider(recipe=recipe).allowed_domains == ["127.0.0.1"]
    moved = RecipeSpider(recipe=recipe, start_url="http://localhost:9000/")
    assert moved.allowed_domains == ["localhost"]


def test_every_section_names_its_problems_at_once() -> None:
    from harvest.recipe import parse_recipe

    recipe = mutate(
        colour="blue",
        render="telepathy",
        expectations=[{"expect": "sparkles", "column": "body"}],
        label_type="tree",
        schedule={"cron": "* * * * *", "retrain": "yes"},
    )
    with pytest.raises(RecipeError) as info:
        parse_recipe(recipe, "x.yaml")
    # unknown keys first, then the crawl's, the gate's, the labels' and the schedule's
    assert [key for key, _ in info.value.problems] == [
        "colour",
        "render",
        "expectations[0].expect",
        "label_type",
        "schedule.retrain",
    ]
    assert info.value.key == "colour"
    assert "; schedule.retrain: true, false or 'on_drift', got 'yes'" in str(info.value)


@pytest.mark.parametrize(
    ("changes", "key", "meant"),
    [
        ({"lables": ["a"]}, "lables", "labels"),
        ({"expectation": []}, "expectation", "expectations"),
        ({"fields__title": {"csss": "h1::text"}}, "fields.title.csss", "css"),
        ({"schedule": {"cron": "* * * * *", "retrian": True}}, "schedule.retrian", "retrain"),
        ({"settings": {"AUTOTHROTTLE_ENABLE": True}}, "settings.AUTOTHROTTLE_ENABLE", None),
    ],
)
def test_a_misspelt_key_is_told_the_one_meant(
    changes: dict[str, object], key: str, meant: str | None
) -> None:
    from harvest.recipe import parse_recipe

    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(**changes), "x.yaml")
    # the misspelt key alone: not again as a required key that is missing
    (found, problem), *more = info.value.problems
    assert (found, more) == (key, [])
    if meant is None:  # a Scrapy setting: the nearest of Scrapy's own
        assert problem == "not a Scrapy setting (did you mean AUTOTHROTTLE_ENABLED?)"
    else:
        assert problem == f"unknown key (did you mean {meant}?)"


def test_a_key_near_none_lists_those_known() -> None:
    from harvest.recipe import parse_recipe

    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(fields__title={"css": "h1::text", "zzz": 1}), "x.yaml")
    assert info.value.problems == [
        (
            "fields.title.zzz",
            "unknown key (expected one of css, format, path, required, type, xpath)",
        )
    ]


@pytest.mark.parametrize("bound", ["min", "max"])
def test_true_is_not_a_number(bound: str) -> None:
    from harvest.recipe import parse_recipe

    rule = {"expect": "length_between", "column": "body", bound: True}
    with pytest.raises(RecipeError) as info:
        parse_recipe(mutate(expectations=[rule]), "x.yaml")
    assert info.value.problems == [(f"expectations[0].{bound}", "a number, got True")]
    rule[bound] = 3
    assert parse_recipe(mutate(expectations=[rule]), "x.yaml").expectations[0].expect == (
        "length_between"
    )


def test_the_spider_reads_the_crawl_section_alone(tmp_path: Path) -> None:
    """spiders may not import harvest: the spider's own load reads the crawl's keys and
    leaves the others' to them; harvest's reads them all."""
    import spiders.recipe
    from harvest.recipe import Recipe

    path = write(tmp_path, mutate(label_type="tree", steps="none"))
    crawl = spiders.recipe.load_recipe(path)
    assert type(crawl) is spiders.recipe.Recipe and crawl.name == "demo"
    assert not hasattr(crawl, "label_type")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert [key for key, _ in info.value.problems] == ["steps", "label_type"]
    # a whole recipe is a crawl recipe, which the spider takes
    assert isinstance(load_recipe("demo", ROOT / "sources"), (Recipe, spiders.recipe.Recipe))
    assert issubclass(Recipe, spiders.recipe.Recipe)
