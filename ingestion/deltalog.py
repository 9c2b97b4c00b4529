"""Reads a Delta table's commit log, for what the ``deltalake`` API does not expose: which
data files each commit added or removed, and whether rows changed or only moved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pyarrow import fs as pafs


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        uri = str(Path(uri).resolve())
    filesystem, path = pafs.FileSystem.from_uri(uri)
    return filesystem, str(path)


def table_filesystem(uri: str) -> pafs.FileSystem:
    """Arrow's own filesystem rooted at a table, where the paths in its log start."""
    filesystem, base = _filesystem(uri)
    return pafs.SubTreeFileSystem(base, filesystem)


def commit_actions(uri: str, version: int) -> list[dict[str, Any]]:
    """The actions of commit ``version``; FileNotFoundError if its log entry is gone."""
    filesystem, base = _filesystem(uri)
    with filesystem.open_input_stream(f"{base}/_delta_log/{version:020d}.json") as f:
        text = f.read().decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def commits(uri: str, start: int, end: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    for version in range(start, end + 1):
        yield version, commit_actions(uri, version)


def file_uri(uri: str, path: str) -> str:
    """A log path (relative and percent-encoded, or absolute) as ``file_uris()`` spells it."""
    path = unquote(path)
    if "://" in path:
        return path
    if "://" in uri:
        return f"{uri.rstrip('/')}/{path}"
    return str(Path(uri).resolve() / path)


def data_added_since(uri: str, since: int, until: int) -> tuple[list[str], dict[str, int]]:
    """Files whose rows were added by commits ``since+1 .. until`` (``dataChange: true``),
    less those whose rows a later commit deleted, in commit order.

    A compaction (``dataChange: false``) only moves rows: its new files hold rows added
    before ``since`` too, so they do not count, while the files it retired still hold exactly
    the rows they were added with. Those are returned in the second value with the version
    that added each: they are read from outside the current snapshot, and gone once vacuumed.
    """
    added: dict[str, int] = {}
    retired: set[str] = set()
    for version, actions in commits(uri, since + 1, until):
        for action in actions:
            if "add" in action and action["add"].get("dataChange", True):
                added[action["add"]["path"]] = version
            elif "remove" in action:
                path = action["remove"]["path"]
                if path not in added:
                    continue
                if action["remove"].get("dataChange", True):
                    del added[path]
                else:
                    retired.add(path)
    files = [file_uri(uri, p) for p in added]
    return files, {file_uri(uri, p): added[p] for p in retired if p in added}


def missing(uri: str, files: set[str]) -> list[str]:
    """Those of ``files`` (as ``file_uri`` spells them) that no longer exist."""
    if not files:
        return []
    filesystem, _ = _filesystem(uri)
    out = []
    for f in sorted(files):
        path = f if "://" not in f else pafs.FileSystem.from_uri(f)[1]
        if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            out.append(f)
    return out


def tables(root: str) -> list[str]:
    """Delta tables under ``root`` at depth one (``runs``) or two (``raw/<source>``)."""
    filesystem, base = _filesystem(root)
    found = []

    def folders(path: str) -> list[str]:
        selector = pafs.FileSelector(path, allow_not_found=True)
        infos = filesystem.get_file_info(selector)
        return [i.base_name for i in infos if i.type == pafs.FileType.Directory]

    for first in folders(base):
        children = folders(f"{base}/{first}")
        if "_delta_log" in children:
            found.append(first)
            continue
        found += [
            f"{first}/{second}"
            for second in children
            if "_delta_log" in folders(f"{base}/{first}/{second}")
        ]
    return sorted(found)
