"""The command line itself: its fixed choices, its groups' help and its version."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, get_args

import typer

from harvest import logs
from harvest.cli import DISTRIBUTION, app, choices
from ingestion.export import FORMATS
from labeling.strategies import STRATEGIES
from tests.helpers import run_harvest
from training.select import AUTO
from training.trainer import MODELS, SCHEDULES


def test_the_choices_are_the_librarys_own() -> None:
    assert get_args(choices.Model) == (AUTO, *MODELS)
    assert get_args(choices.Schedule) == SCHEDULES
    assert get_args(choices.Strategy) == tuple(STRATEGIES)
    assert get_args(choices.ExportFormat) == FORMATS
    assert get_args(choices.LogLevel) == logs.LEVELS


def test_every_groups_help_names_all_its_commands() -> None:
    root: Any = typer.main.get_command(app)  # a group of Typer's own copy of click
    groups = {n: c for n, c in root.commands.items() if hasattr(c, "commands")}
    assert {"label", "lake", "dataset", "model", "quarantine", "recipe"} <= set(groups)
    for name, group in groups.items():
        missing = [c for c in group.commands if c not in (group.help or "")]
        assert not missing, f"`harvest {name} --help` does not name {missing}"


def test_a_mistyped_choice_fails_at_once_naming_the_choices() -> None:
    wide = {"COLUMNS": "300"}  # the usage error box on one line
    proc = run_harvest(["label", "push", "demo", "--strategy", "entropi"], wide, check=False)
    assert proc.returncode == 2 and "'entropi' is not one of 'random'" in proc.stderr
    proc = run_harvest(["export", "d", "--out", "x", "--format", "csv"], wide, check=False)
    assert proc.returncode == 2 and "'csv' is not one of 'parquet', 'jsonl'" in proc.stderr
    unnamed = run_harvest(["label", "simulate", "--truth", "t.json"], wide, check=False)
    assert unnamed.returncode == 2 and "--source" in unnamed.stderr


def test_version() -> None:
    proc = run_harvest(["--version"], {})
    assert proc.stdout.strip() == f"harvest {version(DISTRIBUTION)}"
