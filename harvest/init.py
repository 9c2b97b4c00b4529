"""``harvest init``: a folder to run harvest from, outside any checkout: ``harvest.toml``,
the demo's recipe and a README, from the package's ``skeleton/``."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from ingestion.errors import ConfigurationError

# what init writes, relative to the folder it sets up
FILES = ("harvest.toml", "sources/demo.yaml", "README.md")
# the managed Label Studio when none is on PATH: the checkout's own, as `make setup` puts it
LABEL_STUDIO = ".venv-labelstudio/bin/label-studio"


def init(folder: Path, force: bool = False) -> list[Path]:
    """Writes ``FILES`` under ``folder``; refuses, naming them, to overwrite files already
    there unless ``force``. Returns the paths written."""
    targets = [folder / name for name in FILES]
    there = [str(t) for t in targets if t.exists()]
    if there and not force:
        raise ConfigurationError(f"already there: {', '.join(there)}; --force overwrites them")
    skeleton = resources.files("harvest") / "skeleton"
    # an installed Label Studio is found wherever it is; the file names it absolutely
    label_studio = shutil.which("label-studio") or LABEL_STUDIO
    for name, target in zip(FILES, targets, strict=True):
        text = (skeleton / name).read_text(encoding="utf-8")
        if name == "harvest.toml":
            text = text.replace("{label_studio}", label_studio)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return targets
