"""Dataset versions: labelled curated rows, split once, pinned to their source table versions.

A version is cut from one or more ``curated/<source>`` tables joined by row id (the
content hash) to one labels table, split by the rules in ``ingestion.split``, and checked
for leaks (``ingestion.leakage``) before anything is written. Its lineage, in the commit
that writes it, names the table versions it read, the seed and the split rules, so
``rebuild_dataset`` cuts it again bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from ingestion import leakage
from ingestion.dedup import GROUP
from ingestion.lake import LINEAGE_KEY, Lake, LakeError, LakeNotFoundError
from ingestion.minhash import SIGNATURE
from ingestion.split import (
    DEFAULT_FRACTIONS,
    SPLITS,
    SplitError,
    SplitRules,
    check_fractions,
    group_split,
    stratified_split,
    time_split,
)

SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
    ]
)


@dataclass(frozen=True)
class DatasetVersion:
    """One cut of ``datasets/<name>``. ``lineage`` is what its commit records: the table
    versions it read, the seed and split rules, and what the cut found (counts per split,
    groups, leakage, the content hash). ``reused``: the same inputs had been cut before."""

    name: str
    version: int
    rows: int
    lineage: dict[str, Any]
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        """What `harvest dataset create` prints and ``POST /datasets`` answers."""
        lineage = self.lineage
        return {
            "dataset": self.name,
            "version": self.version,
            "rows": self.rows,
            "reused": self.reused,
            "splits": lineage.get("counts"),
            "tables": lineage["tables"],
            "split_rules": lineage.get("split"),
            "groups": lineage.get("groups"),
            "leakage": lineage.get("leakage"),
            "content_sha256": lineage.get("content_sha256"),
        }


@dataclass
class Cut:
    """The rows of a version and what was found on the way: the duplicate pairs among
    them (only when grouping or the leak check asked for them) and the row count left
    out because an earlier source holds the same content."""

    table: pa.Table
    pairs: list[leakage.Pair] | None
    groups: list[int]
    dropped_repeats: int
    times: list[Any] | None
    reserved: int = 0  # labelled rows of the evaluation reserve, when the split used it


def cut_dataset(
    lake: Lake,
    name: str,
    source: str | list[str],
    labels_table: str,
    text_field: str | dict[str, str],
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    rules: SplitRules | None = None,
) -> DatasetVersion:
    """Joins curated rows of ``source`` (one or several, ``text_field`` one for all or one
    per source) with their labels and writes a new version of ``datasets/<name>``.

    The same inputs (table versions, seed, fractions, rules) give back the version already
    cut. A cut that puts duplicates on two sides of the split raises ``LeakError`` and
    writes nothing.
    """
    sources = [source] if isinstance(source, str) else list(source)
    if not sources or len(set(sources)) != len(sources):
        raise LakeError(f"cannot cut dataset {name!r}: sources {sources} (give each once)")
    fields = text_field if isinstance(text_field, dict) else dict.fromkeys(sources, text_field)
    missing = [s for s in sources if s not in fields]
    if missing:
        raise LakeError(f"cannot cut dataset {name!r}: no text field given for {missing}")
    try:
        fractions = check_fractions(fractions)
    except SplitError as exc:
        raise LakeError(f"cannot cut dataset {name!r}: {exc}") from exc
    rules = (rules or SplitRules()).canonical()
    curated_tables = [f"curated/{s}" for s in sources]
    for table in (*curated_tables, labels_table):
        if not lake.exists(table):
            raise LakeError(f"cannot cut dataset {name!r}: table {table!r} does not exist yet")
    # a compaction's version holds the same rows as the one before: it cuts nothing new
    tables = {t: lake.data_version(t) for t in (*curated_tables, labels_table)}
    # rows a push held back at random as an evaluation reserve (labeling.push)
    reserve = reserve_table(labels_table)
    if lake.exists(reserve):
        tables[reserve] = lake.data_version(reserve)
    one = len(sources) == 1
    lineage: dict[str, Any] = {
        "tables": tables,
        # one source keeps the shape versions had before several were possible
        "curated": curated_tables[0] if one else curated_tables,
        "labels": labels_table,
        "seed": seed,
        "fractions": list(fractions),
        "text_field": fields[sources[0]] if one else {f"curated/{s}": fields[s] for s in sources},
        "split": rules.as_lineage(),
    }
    if reserve in tables:
        lineage["reserve"] = reserve
    table = f"datasets/{name}"
    if lake.exists(table):
        latest, stored = dataset_lineage(lake, name)
        if _inputs(stored) == _inputs(lineage):
            rows = lake.read(table, columns=["row_id"]).num_rows
            return DatasetVersion(name, latest, rows, stored, reused=True)

    cut = _cut(lake, name, lineage, find_pairs=True)
    data = cut.table
    assert cut.pairs is not None
    report = leakage.leaks(data, cut.pairs, rules.near_threshold)
    if not report.ok:
        raise leakage.LeakError(name, report)
    lineage.update(_outcome(cut, rules, report))
    # the hash lets a rebuild be checked even where the stored files are gone
    lineage["content_sha256"] = table_sha256(data)
    version = lake.overwrite(table, data, lineage)
    return DatasetVersion(name, version, data.num_rows, lineage)


def _outcome(cut: Cut, rules: SplitRules, report: leakage.LeakReport) -> dict[str, Any]:
    """What a cut found, recorded beside its inputs for the dataset card."""
    splits = cut.table["split"].to_pylist()
    counts = Counter(splits)
    out: dict[str, Any] = {
        "counts": {s: counts.get(s, 0) for s in SPLITS},
        "leakage": report.as_json(),
        "repeats_dropped": cut.dropped_repeats,
        # where the test rows came from: the reserve is a random sample, every labelled row
        # is what active learning chose and not one
        "test_from": "evaluation reserve" if cut.reserved else "every labelled row",
        "reserve_rows": cut.reserved,
    }
    if rules.group is not None:
        sizes = Counter(cut.groups)
        out["groups"] = {
            "count": len(sizes),
            "largest": max(sizes.values(), default=0),
            "rows_sharing_a_group": sum(n for n in sizes.values() if n > 1),
        }
    if cut.times is not None:
        ranges: dict[str, list[Any]] = {}
        for t, s in zip(cut.times, splits, strict=True):
            lo_hi = ranges.setdefault(s, [t, t])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], t), max(lo_hi[1], t)
        out["time_ranges"] = {s: ranges[s] for s in SPLITS if s in ranges}
    return out


def build_dataset(lake: Lake, name: str, lineage: dict[str, Any]) -> pa.Table:
    """The rows of a dataset version, from the exact input versions its lineage names."""
    return _cut(lake, name, lineage, find_pairs=False).table


def _cut(lake: Lake, name: str, lineage: dict[str, Any], find_pairs: bool) -> Cut:
    inputs = _inputs(lineage)
    rules = SplitRules.from_lineage(lineage.get("split"))
    labels_table = inputs["labels"]
    labels = lake.read(labels_table, inputs["tables"][labels_table])
    if "label" not in labels.column_names or "row_id" not in labels.column_names:
        raise LakeError(
            f"cannot cut dataset {name!r}: {labels_table} has no row_id and label columns "
            f"(it has {', '.join(labels.column_names)})"
        )
    # row id -> (source, url, text, group, time, signature); the first source listed wins a
    # row id several hold (the same content), the last row wins within one table
    found: dict[str, tuple[Any, ...]] = {}
    repeats = 0
    need_pairs = find_pairs or rules.group is not None
    for curated_table in inputs["curated"]:
        part = _curated(lake, name, curated_table, inputs, rules, need_pairs)
        repeats += sum(1 for row_id in part if row_id in found)
        for row_id, values in part.items():
            found.setdefault(row_id, values)
    rows, extra = [], []
    for row_id, label in sorted(
        zip(labels["row_id"].to_pylist(), labels["label"].to_pylist(), strict=True)
    ):
        if row_id in found and label:
            src, url, text, *rest = found[row_id]
            rows.append({"row_id": row_id, "source": src, "url": url, "text": text, "label": label})
            extra.append(rest)
    if not rows:
        raise LakeError(
            f"cannot cut dataset {name!r}: no row of {', '.join(inputs['curated'])} has a label "
            f"in {labels_table}"
        )
    pairs = None
    if need_pairs:
        near = leakage.checker(rules.near_threshold)
        texts = [r["text"] for r in rows]
        sigs, valid = leakage.signatures(texts, [e[2] for e in extra], near)
        pairs = leakage.duplicate_pairs([r["row_id"] for r in rows], texts, sigs, valid, near)
    n = len(rows)
    groups = (
        leakage.linked_groups([e[0] for e in extra], pairs or [])
        if rules.group is not None
        else list(range(n))
    )
    fractions = inputs["fractions"]
    fractions = (fractions[0], fractions[1], fractions[2])
    labels_of = [r["label"] for r in rows]
    times = [e[1] for e in extra] if rules.time_field else None
    if times is not None and len({type(t) for t in times}) > 1:
        kinds = ", ".join(sorted({type(t).__name__ for t in times}))
        raise LakeError(
            f"cannot cut dataset {name!r} by time: {rules.time_field!r} mixes {kinds} values"
        )
    reserved = _reserved(lake, inputs, rows)
    if times is not None:
        splits = time_split(times, groups, fractions)
    elif reserved:
        splits = reserve_split(labels_of, groups, reserved, fractions, inputs["seed"])
    elif rules.group is None and rules.stratify:
        splits = stratified_split(labels_of, fractions, inputs["seed"])
    else:
        splits = group_split(labels_of, groups, fractions, inputs["seed"], rules.stratify)
    for row, split in zip(rows, splits, strict=True):
        row["split"] = split
    return Cut(
        pa.Table.from_pylist(rows, schema=SCHEMA),
        pairs,
        groups,
        repeats,
        times,
        len(reserved) if reserved and times is None else 0,
    )


def reserve_table(labels_table: str) -> str:
    """``reserve/<source>``: the row ids pushes held back for evaluation."""
    return "reserve/" + labels_table.split("/", 1)[-1]


def _reserved(lake: Lake, inputs: dict[str, Any], rows: list[dict[str, Any]]) -> set[int]:
    """Positions of the labelled rows in the evaluation reserve."""
    table = inputs.get("reserve")
    if not table:
        return set()
    ids = set(lake.read(table, inputs["tables"][table], columns=["row_id"])["row_id"].to_pylist())
    return {i for i, r in enumerate(rows) if r["row_id"] in ids}


def reserve_split(
    labels: list[str],
    groups: list[int],
    reserved: set[int],
    fractions: tuple[float, float, float],
    seed: int,
) -> list[str]:
    """Rows active learning chose train; the reserve, drawn at random, is split between
    test and validation in the ratio of their fractions, each class alike, test first, so
    that the test metrics are those of a sample of the data. A group (duplicates, or the
    recipe's group column) with a reserved row is held out whole: none straddles."""
    held = fractions[1] + fractions[2]
    test_share = fractions[2] / held if held else 1.0
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    held_out = sorted({groups[i] for i in reserved})
    by_class: dict[str, list[int]] = {}
    for g in held_out:
        by_class.setdefault(labels[members[g][0]], []).append(g)
    out = ["train"] * len(labels)
    rng = random.Random(seed)
    for label in sorted(by_class):
        chosen = by_class[label]
        rng.shuffle(chosen)
        n_test = math.ceil(len(chosen) * test_share)
        for j, g in enumerate(chosen):
            for i in members[g]:
                out[i] = "test" if j < n_test else "validation"
    return out


def _curated(
    lake: Lake,
    name: str,
    table: str,
    inputs: dict[str, Any],
    rules: SplitRules,
    signatures: bool,
) -> dict[str, tuple[Any, ...]]:
    """The rows of one curated table the cut needs, by row id."""
    text_field = inputs["text_field"][table]
    have = set(lake.table(table, inputs["tables"][table]).schema().to_arrow().names)
    for column in ("content_sha256", "source", "url", text_field):
        if column not in have:
            raise LakeError(f"cannot cut dataset {name!r}: {table} has no column {column!r}")
    columns = ["content_sha256", "source", "url", text_field]
    group = rules.group
    if group is not None and group not in have and group != GROUP:
        raise LakeError(
            f"cannot cut dataset {name!r}: group column {group!r} is not in {table} "
            f"(columns: {', '.join(sorted(have))})"
        )
    if rules.time_field is not None and rules.time_field not in have:
        raise LakeError(
            f"cannot cut dataset {name!r}: time field {rules.time_field!r} is not in {table} "
            f"(columns: {', '.join(sorted(have))})"
        )
    extra = [c for c in (group, rules.time_field) if c is not None and c in have]
    if signatures and SIGNATURE in have:
        extra.append(SIGNATURE)
    data = lake.read(table, inputs["tables"][table], columns=list(dict.fromkeys(columns + extra)))
    values = {c: data[c].to_pylist() for c in data.column_names}
    n = data.num_rows
    hashes = values["content_sha256"]
    # a table curated before dedup gave rows a group: each row is the first of its own
    group_of = values.get(group) if group is not None else None
    groups = [g if g is not None else h for g, h in zip(group_of or hashes, hashes, strict=True)]
    times = [None] * n
    if rules.time_field is not None:
        times = [_time_key(v) for v in values[rules.time_field]]
        blank = [u for u, t in zip(values["url"], times, strict=True) if t is None]
        if blank:
            raise LakeError(
                f"cannot cut dataset {name!r} by time: {len(blank)} row(s) of {table} have no "
                f"{rules.time_field!r}, e.g. {blank[0]}"
            )
    sigs = values.get(SIGNATURE) or [None] * n
    out: dict[str, tuple[Any, ...]] = {}
    for i, h in enumerate(hashes):
        out[h] = (
            values["source"][i],
            values["url"][i],
            values[text_field][i],
            groups[i],
            times[i],
            sigs[i],
        )
    return out


def _time_key(value: Any) -> Any:
    """A time as a value that sorts: ISO 8601 text (UTC where the time has a zone) or a
    number."""
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    return value


def _inputs(lineage: dict[str, Any]) -> dict[str, Any]:
    """What a cut depends on, in one shape: lineages written before they named their inputs
    by role name them by table prefix, one source names its table and text field alone,
    and versions cut before split rules were recorded were stratified row by row."""
    tables = dict(lineage.get("tables", {}))
    curated = lineage.get("curated") or next((t for t in tables if t.startswith("curated/")), None)
    curated_list = [curated] if isinstance(curated, str) else list(curated or [])
    labels = lineage.get("labels") or next((t for t in tables if t not in curated_list), None)
    text_field = lineage.get("text_field")
    fields = text_field if isinstance(text_field, dict) else dict.fromkeys(curated_list, text_field)
    return {
        "tables": tables,
        "curated": curated_list,
        "labels": labels,
        "reserve": lineage.get("reserve"),
        "seed": lineage.get("seed"),
        "fractions": lineage.get("fractions"),
        "text_field": fields,
        "split": SplitRules.from_lineage(lineage.get("split")).as_lineage(),
    }


def dataset_lineage(
    lake: Lake, name: str, version: int | None = None
) -> tuple[int, dict[str, Any]]:
    """The version that cut what ``datasets/<name>`` holds at ``version`` (default: latest),
    and its lineage. Compaction and vacuum commit versions of their own that change no rows
    and carry no lineage; they belong to the cut before them."""
    table = f"datasets/{name}"
    if not lake.exists(table):
        raise LakeNotFoundError(
            f"no dataset {name!r} in lake {lake.root} (cut one with `harvest dataset create` "
            "or `harvest train`)"
        )
    at = lake.table(table, version).version()
    for entry in lake.table(table).history():
        if entry["version"] <= at and LINEAGE_KEY in entry:
            return int(entry["version"]), dict(json.loads(entry[LINEAGE_KEY]))
    raise LakeError(f"dataset {name!r} version {at} has no lineage in its commit log")


def dataset_versions(lake: Lake, name: str) -> list[tuple[int, dict[str, Any]]]:
    """Every version cut of ``datasets/<name>`` still in its log, oldest first."""
    out = [
        (int(e["version"]), dict(json.loads(e[LINEAGE_KEY])))
        for e in lake.table(f"datasets/{name}").history()
        if LINEAGE_KEY in e
    ]
    return sorted(out, key=lambda item: item[0])


def table_sha256(table: pa.Table) -> str:
    """A hash of an Arrow table's column names, types and values in row order, the same
    however its buffers are chunked or laid out."""
    h = hashlib.sha256()
    h.update(json.dumps([[f.name, str(f.type)] for f in table.schema]).encode())
    for batch in table.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            h.update(b"\n" + json.dumps(row, default=str, ensure_ascii=False).encode())
    return h.hexdigest()


@dataclass
class Rebuild:
    name: str
    version: int
    rows: int
    lineage: dict[str, Any]
    sha256: str
    stored_sha256: str | None  # None where the stored version can no longer be read
    recorded_sha256: str | None  # None for versions cut before the hash was recorded
    table: pa.Table

    @property
    def identical(self) -> bool:
        known = [h for h in (self.stored_sha256, self.recorded_sha256) if h is not None]
        return bool(known) and all(h == self.sha256 for h in known)


def rebuild_dataset(lake: Lake, name: str, version: int | None = None) -> Rebuild:
    """Cuts dataset version ``version`` again from the input versions it names, and hashes
    it beside the stored version."""
    cut_version, lineage = dataset_lineage(lake, name, version)
    rebuilt = build_dataset(lake, name, lineage)
    try:
        stored_sha: str | None = table_sha256(lake.read(f"datasets/{name}", cut_version))
    except LakeError:
        stored_sha = None
    return Rebuild(
        name,
        cut_version,
        rebuilt.num_rows,
        lineage,
        table_sha256(rebuilt),
        stored_sha,
        lineage.get("content_sha256"),
        rebuilt,
    )


def split_rows(data: pa.Table, split: str) -> tuple[list[str], list[str]]:
    """The texts and labels of one split of a dataset version's rows."""
    import pyarrow.compute as pc

    part = data.filter(pc.equal(data["split"], split))
    return part["text"].to_pylist(), part["label"].to_pylist()


def read_dataset(
    lake: Lake, name: str, version: int | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    cut_version, lineage = dataset_lineage(lake, name, version)
    return lake.read(f"datasets/{name}", cut_version), {"version": cut_version, **lineage}
