"""Checks a lake's tables for damage that reads would otherwise meet one at a time.

Three kinds, each exact; the first and the last are cheap enough for every ``harvest
status``, the second reads the key columns of every row and is left to ``harvest lake
check``:

- missing data files: files a table's current version names in its log that storage no
  longer holds (deleted by hand, vacuumed by another tool); any read of the table fails;
- duplicate keys: rows sharing what should be unique in the table (``KEYS``);
- watermark gaps: the raw version the last curate run of a source read up to (``runs``)
  is past the end of ``raw/<source>`` (the next curate would find nothing new), or the
  commits from there on, which the next curate reads, are gone from the log.

A table whose log cannot be loaded at all is reported as unreadable.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import pyarrow.compute as pc
from deltalake.exceptions import DeltaError
from pyarrow import fs as pafs

from ingestion import deltalog
from ingestion.lake import Lake, LakeError
from ingestion.runs import CURATE_STAGE, last_run

# What is unique per table kind (the part of the name before the slash). A page's rows
# repeat its URL whenever it changed between crawls, so the URL alone is no key; one crawl
# writes each page once (a resumed crawl skips pages already committed), and every later
# stage carries that row on at most once.
KEYS: dict[str, tuple[str, ...]] = {
    "raw": ("url", "crawl_id"),
    "curated": ("url", "crawl_id"),
    "quarantine": ("url", "crawl_id"),
    "duplicates": ("url", "crawl_id"),
    "changes": ("url", "crawl_id"),
    "labels": ("task_id",),
    "annotations": ("annotation_id",),
    "datasets": ("row_id",),
}
SHOWN = 3  # files or keys named in a problem's line
_COMMIT = re.compile(r"^(\d{20})\.json$")


def key_of(table: str) -> tuple[str, ...] | None:
    kind, _, rest = table.partition("/")
    return KEYS.get(kind) if rest else None


@dataclass(frozen=True)
class MissingFiles:
    kind: ClassVar[str] = "missing_files"
    table: str
    version: int
    files: tuple[str, ...]  # as file_uris() spells them

    def text(self) -> str:
        n = len(self.files)
        names = ", ".join(f.rsplit("/", 1)[-1] for f in self.files[:SHOWN])
        more = ", ..." if n > SHOWN else ""
        return f"{self.table} is damaged: {n} data file{'s' * (n != 1)} missing ({names}{more})"


@dataclass(frozen=True)
class DuplicateKeys:
    kind: ClassVar[str] = "duplicate_keys"
    table: str
    key: tuple[str, ...]
    keys: int  # distinct keys held by more than one row
    extra_rows: int  # rows beyond the first of each such key
    examples: tuple[dict[str, Any], ...]

    def text(self) -> str:
        shown = "; ".join(
            ", ".join(f"{k}={v}" for k, v in example.items()) for example in self.examples
        )
        return (
            f"{self.table} is damaged: {self.keys} key{'s' * (self.keys != 1)} "
            f"({', '.join(self.key)}) held by more than one row, {self.extra_rows} "
            f"extra row{'s' * (self.extra_rows != 1)}, e.g. {shown}"
        )


@dataclass(frozen=True)
class WatermarkGap:
    kind: ClassVar[str] = "watermark_gap"
    table: str
    raw_version: int  # what the last curate run read up to
    latest: int
    missing_commits: tuple[int, ...] = ()

    def text(self) -> str:
        if self.raw_version > self.latest:
            return (
                f"{self.table} is damaged: the last curate read it up to version "
                f"{self.raw_version}, past its latest version {self.latest}; new rows "
                f"will not be curated until it passes {self.raw_version}"
            )
        gone = self.missing_commits
        shown = ", ".join(str(v) for v in gone[:SHOWN]) + (", ..." if len(gone) > SHOWN else "")
        return (
            f"{self.table} is damaged: its log no longer has version{'s' * (len(gone) != 1)} "
            f"{shown}, which the next curate must read (the last read up to version "
            f"{self.raw_version})"
        )


@dataclass(frozen=True)
class Unreadable:
    kind: ClassVar[str] = "unreadable"
    table: str
    error: str

    def text(self) -> str:
        return f"{self.table} is damaged: its log cannot be loaded: {self.error}"


Problem = MissingFiles | DuplicateKeys | WatermarkGap | Unreadable


def as_json(problem: Problem) -> dict[str, Any]:
    return {"kind": problem.kind, **asdict(problem), "text": problem.text()}


@dataclass
class TableCheck:
    table: str
    version: int | None  # None when the log cannot be loaded
    files: int
    checked: tuple[str, ...]  # the kinds of problem looked for
    problems: list[Problem] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "version": self.version,
            "files": self.files,
            "checked": list(self.checked),
            "damaged": self.damaged,
            "problems": [as_json(p) for p in self.problems],
        }


@dataclass
class LakeCheck:
    root: str
    tables: list[TableCheck]

    @property
    def damaged(self) -> bool:
        return any(t.damaged for t in self.tables)

    @property
    def problems(self) -> list[Problem]:
        return [p for t in self.tables for p in t.problems]

    def as_json(self) -> dict[str, Any]:
        return {
            "lake": self.root,
            "healthy": not self.damaged,
            "damaged": [t.table for t in self.tables if t.damaged],
            "tables": [t.as_json() for t in self.tables],
        }


def check_lake(lake: Lake, tables: list[str] | None = None, keys: bool = True) -> LakeCheck:
    """Checks ``tables`` (default: every table of the lake); ``keys``: look for duplicate
    keys too, which reads every row's key columns."""
    names = lake.tables() if tables is None else tables
    out = []
    for name in names:
        try:
            out.append(check_table(lake, name, keys))
        except LakeError as exc:  # listed, but with no commit a loader accepts
            out.append(TableCheck(name, None, 0, (), [Unreadable(name, _line(exc))]))
    return LakeCheck(lake.root, out)


def check_table(lake: Lake, table: str, keys: bool = True) -> TableCheck:
    """One table; a LakeError when there is no such table."""
    try:
        dt = lake.table(table)
        files = dt.file_uris()
    except (DeltaError, OSError, ValueError) as exc:
        return TableCheck(table, None, 0, (), [Unreadable(table, _line(exc))])
    version = dt.version()
    check = TableCheck(table, version, len(files), ("missing_files",))
    gone = deltalog.missing(lake.uri(table), set(files))
    if gone:
        check.problems.append(MissingFiles(table, version, tuple(gone)))
    key = key_of(table)
    # a table missing files cannot be read whole: its keys are not checked
    if keys and key is not None and not gone:
        check.checked += ("duplicate_keys",)
        duplicate = duplicate_keys(lake, table, key)
        if duplicate is not None:
            check.problems.append(duplicate)
    if table.startswith("raw/"):
        check.checked += ("watermark_gap",)
        gap = watermark_gap(lake, table, version)
        if gap is not None:
            check.problems.append(gap)
    return check


def duplicate_keys(lake: Lake, table: str, key: tuple[str, ...]) -> DuplicateKeys | None:
    """Keys of ``table`` held by more than one row; None when each is held once, or the
    table lacks a key column (written before it had one)."""
    names = lake.table(table).schema().to_arrow().names
    if not set(key) <= set(names):
        return None
    rows = lake.read(table, columns=list(key))
    if rows.num_rows < 2:
        return None
    counted = rows.group_by(list(key), use_threads=False).aggregate([([], "count_all")])
    repeated = counted.filter(pc.greater(counted["count_all"], 1))
    if repeated.num_rows == 0:
        return None
    extra = pc.sum(repeated["count_all"]).as_py() - repeated.num_rows
    examples = repeated.select(list(key)).slice(0, SHOWN).to_pylist()
    return DuplicateKeys(table, key, repeated.num_rows, int(extra), tuple(examples))


def watermark_gap(lake: Lake, table: str, latest: int) -> WatermarkGap | None:
    """The last curate run's raw version against ``raw/<source>`` at version ``latest``."""
    source = table.split("/", 1)[1]
    try:
        run = last_run(lake, CURATE_STAGE, source)
    except LakeError:  # the runs table is damaged itself, and reported as such
        return None
    if not run or run.get("raw_version") is None:
        return None
    read_up_to = int(run["raw_version"])
    if read_up_to > latest:
        return WatermarkGap(table, read_up_to, latest)
    # what the gate reads next (Lake.new_files): each commit after the watermark
    have = _commits(lake, table)
    gone = tuple(v for v in range(read_up_to + 1, latest + 1) if v not in have)
    return WatermarkGap(table, read_up_to, latest, gone) if gone else None


def _commits(lake: Lake, table: str) -> set[int]:
    """Versions whose commit file is in the table's log."""
    filesystem = deltalog.table_filesystem(lake.uri(table))
    infos = filesystem.get_file_info(pafs.FileSelector("_delta_log", allow_not_found=True))
    return {int(m.group(1)) for i in infos if (m := _COMMIT.match(i.base_name))}


def _line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
