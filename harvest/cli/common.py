"""What every command shares: the configuration, the JSON line on stdout, stderr."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from harvest.config import Config, load_config

err = Console(stderr=True, soft_wrap=True)


def config() -> Config:
    return load_config()


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, default=str))
