"""What every command shares: the configuration, the JSON line on stdout, stderr."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

from harvest import logs
from harvest.config import Config, load_config


class Stderr(Console):
    """The console for people on stderr; under ``--log-format json`` each message is a JSON
    record instead, so a log shipper reads stderr whole."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not logs.as_json():
            super().print(*objects, **kwargs)
            return
        plain = [Text.from_markup(o).plain if isinstance(o, str) else str(o) for o in objects]
        text = " ".join(plain)
        level = logging.ERROR if text.startswith(("error:", "busy:")) else logging.INFO
        record = logging.makeLogRecord(
            {"name": "harvest.cli", "levelno": level, "levelname": logging.getLevelName(level)}
        )
        record.msg = text
        sys.stderr.write(logs.JsonFormatter().format(record) + "\n")


err = Stderr(stderr=True, soft_wrap=True)


def config() -> Config:
    return load_config()


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, default=str))
