"""`harvest init`: a folder set up to run harvest from."""

from __future__ import annotations

from pathlib import Path

import typer

from harvest.cli.common import emit


def init(
    folder: Path = typer.Argument(Path("."), help="the folder to set up (made if missing)"),
    force: bool = typer.Option(False, help="overwrite files already there"),
) -> None:
    """Write harvest.toml, sources/demo.yaml and a README into FOLDER."""
    from harvest.init import init as write

    written = write(folder, force)
    emit({"folder": str(folder.resolve()), "written": [str(p) for p in written]})
