"""Dataset versions: group-aware and time splits, several sources, the leak check, rebuilds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from harvest.demosite import generate
from ingestion.datasets import cut_dataset, dataset_lineage, read_dataset, rebuild_dataset
from ingestion.lake import Lake
from ingestion.leakage import LeakError, check_leaks
from ingestion.split import (
    LEGACY,
    SplitError,
    SplitRules,
    group_split,
    parse_fractions,
    stratified_split,
    time_split,
)
from tests.helpers import ROOT, last_json, run_harvest

ARTICLES = [a for a in generate(300, seed=11).articles if not a.planted]


def body(i: int) -> str:
    return " ".join(ARTICLES[i].paragraphs)


def edited(text: str) -> str:
    """A near copy: two words changed, as a syndicated copy with a new byline might be."""
    words = text.split()
    words[2], words[-3] = "Reportedly", "meanwhile"
    return " ".join(words)


def curated_row(i: int, source: str = "a", text: str | None = None, **extra: object) -> dict:
    return {
        "content_sha256": f"{source}{i}",
        "source": source,
        "url": f"http://{source}/{i}",
        "body": body(i) if text is None else text,
        "dup_group": f"{source}{i}",
        "published": ARTICLES[i].published,
        **extra,
    }


def write(lake: Lake, rows: list[dict], labels: dict[str, str] | None = None) -> None:
    """Curated rows per source, and labels/p for each row (its article's class)."""
    for source in sorted({r["source"] for r in rows}):
        mine = [r for r in rows if r["source"] == source]
        lake.append(f"curated/{source}", pa.Table.from_pylist(mine))
    if labels is None:
        labels = {
            r["content_sha256"]: ARTICLES[int(r["url"].rsplit("/", 1)[1])].label for r in rows
        }
    lake.overwrite(
        "labels/p",
        pa.Table.from_pylist([{"row_id": k, "label": v} for k, v in sorted(labels.items())]),
    )


def splits_of(table: pa.Table, column: str = "url") -> dict[str, str]:
    return dict(zip(table[column].to_pylist(), table["split"].to_pylist(), strict=True))


def near_copies_lake(tmp_path: Path, n: int = 120, copies: int = 30) -> Lake:
    """Source a with ``n`` articles; source b with near copies of ``copies`` of them (their
    own hashes and dup_groups, as b's own gate saw nothing of a) and 20 articles of its own."""
    lake = Lake(tmp_path / "lake")
    rows = [curated_row(i) for i in range(n)]
    rows += [curated_row(i, "b", edited(body(i))) for i in range(copies)]
    rows += [curated_row(i, "b") for i in range(n, n + 20)]
    write(lake, rows)
    return lake


def test_fractions_parse_and_bad_ones_are_named() -> None:
    assert parse_fractions("0.8/0.1/0.1") == (0.8, 0.1, 0.1)
    with pytest.raises(SplitError, match="add up to 1.1, not 1"):
        parse_fractions("0.8/0.2/0.1")
    with pytest.raises(SplitError, match="three fractions"):
        parse_fractions("0.8/0.2")


def test_group_split_of_single_rows_gives_stratified_sizes() -> None:
    labels = ["a"] * 100 + ["b"] * 40
    splits = group_split(labels, list(range(140)), (0.7, 0.15, 0.15), seed=1)
    per = Counter(zip(labels, splits, strict=True))
    ref = Counter(zip(labels, stratified_split(labels, (0.7, 0.15, 0.15), 1), strict=True))
    assert per == ref
    assert group_split(labels, list(range(140)), (0.7, 0.15, 0.15), seed=1) == splits
    assert group_split(labels, list(range(140)), (0.7, 0.15, 0.15), seed=2) != splits


def test_group_split_keeps_groups_whole_and_labels_balanced() -> None:
    # 60 groups of 1 to 5 rows, each group of one class
    labels, groups = [], []
    for g in range(60):
        size = 1 + g % 5
        labels += ["x" if g % 3 else "y"] * size
        groups += [f"g{g}"] * size
    splits = group_split(labels, groups, (0.8, 0.1, 0.1), seed=0)
    sides: dict[str, set[str]] = {}
    for g, s in zip(groups, splits, strict=True):
        sides.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in sides.values())
    per = Counter(zip(labels, splits, strict=True))
    for label in ("x", "y"):
        total = labels.count(label)
        assert abs(per[(label, "train")] - 0.8 * total) <= 5
        assert per[(label, "validation")] > 0 and per[(label, "test")] > 0
    # a split asked for no rows gets none
    assert "test" not in group_split(labels, groups, (0.9, 0.1, 0.0), seed=0)


def test_time_split_puts_the_oldest_in_train() -> None:
    times = [f"2026-01-{d:02d}" for d in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10)]
    groups = list(range(10))
    splits = time_split(times, groups, (0.6, 0.2, 0.2))
    by_split = {
        s: sorted(t for t, x in zip(times, splits, strict=True) if x == s)
        for s in ("train", "validation", "test")
    }
    assert by_split["train"] == [f"2026-01-{d:02d}" for d in range(1, 7)]
    assert by_split["test"] == ["2026-01-09", "2026-01-10"]
    # a group goes where its oldest row puts it
    grouped = time_split(times, [0, 1, 2, 3, 4, 5, 6, 7, 8, 1], (0.6, 0.2, 0.2))
    assert grouped[1] == grouped[9] == "train"


def test_near_copies_in_another_source_stay_on_one_side(tmp_path: Path) -> None:
    lake = near_copies_lake(tmp_path)
    v = cut_dataset(lake, "d", ["a", "b"], "labels/p", "body", seed=4, fractions=(0.6, 0.2, 0.2))
    assert v.rows == 170
    assert v.lineage["curated"] == ["curated/a", "curated/b"]
    assert v.lineage["tables"] == {"curated/a": 0, "curated/b": 0, "labels/p": 0}
    assert v.lineage["leakage"] == {"exact": 0, "near": 0, "near_threshold": 0.7}
    assert v.lineage["groups"]["rows_sharing_a_group"] == 60
    data, meta = read_dataset(lake, "d")
    side = splits_of(data)
    assert all(side[f"http://a/{i}"] == side[f"http://b/{i}"] for i in range(30))
    # the copies are spread over the splits, not all parked in train
    assert len({side[f"http://a/{i}"] for i in range(30)}) == 3
    assert meta["counts"] == dict(Counter(data["split"].to_pylist()))


def test_each_group_lands_in_exactly_one_split(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    # rows sharing a dup_group value: groups of up to four rows
    write(lake, [curated_row(i, dup_group=f"g{i // 4 if i < 80 else i}") for i in range(160)])
    v = cut_dataset(lake, "d", "a", "labels/p", "body", seed=1, fractions=(0.7, 0.15, 0.15))
    data = lake.read("datasets/d", v.version)
    curated = lake.read("curated/a")
    group_of = dict(zip(curated["url"].to_pylist(), curated["dup_group"].to_pylist(), strict=True))
    sides: dict[str, set[str]] = {}
    for url, split in splits_of(data).items():
        sides.setdefault(group_of[url], set()).add(split)
    assert len(sides) == 20 + 80
    assert all(len(s) == 1 for s in sides.values())
    assert {s for sides_of in sides.values() for s in sides_of} == {"train", "validation", "test"}
    assert rebuild_dataset(lake, "d", v.version).identical


def test_leak_planted_across_splits_fails_the_cut(tmp_path: Path) -> None:
    lake = near_copies_lake(tmp_path, n=60, copies=20)
    # without the group rule, near copies land where the labels put them: leaks
    with pytest.raises(LeakError) as caught:
        cut_dataset(lake, "d", ["a", "b"], "labels/p", "body", seed=0, rules=LEGACY)
    report = caught.value.report
    assert report.near > 0 and report.exact == 0
    message = str(caught.value)
    assert f"{report.near} pair(s) of rows are duplicates across splits" in message
    assert "http://a/" in message and "http://b/" in message and "near, similarity" in message
    for leak in report.leaks:
        assert leak.a["split"] != leak.b["split"]
        assert leak.a["url"].rsplit("/", 1)[1] == leak.b["url"].rsplit("/", 1)[1]
    assert not lake.exists("datasets/d")  # nothing written


def test_leak_check_finds_a_pair_moved_across_the_split(tmp_path: Path) -> None:
    lake = near_copies_lake(tmp_path, n=60, copies=20)
    cut_dataset(lake, "d", ["a", "b"], "labels/p", "body")
    data, _ = read_dataset(lake, "d")
    assert check_leaks(data).ok
    # bypass the group rule: send the copy of article 3 to another side than article 3
    side = splits_of(data)
    other = "test" if side["http://a/3"] != "test" else "train"
    urls = data["url"].to_pylist()
    old = data["split"].to_pylist()
    split = [other if u == "http://b/3" else s for u, s in zip(urls, old, strict=True)]
    moved = data.set_column(data.schema.get_field_index("split"), "split", pa.array(split))
    report = check_leaks(moved)
    assert (report.exact, report.near) == (0, 1)
    assert {report.leaks[0].a["url"], report.leaks[0].b["url"]} == {"http://a/3", "http://b/3"}
    assert report.leaks[0].similarity >= 0.7

    # an exact copy (other hash, same text but for case and punctuation) is exact
    text = data["text"].to_pylist()
    i, j = urls.index("http://a/5"), urls.index("http://a/6")
    text[j] = text[i].upper().replace(".", " !")
    split[j] = "test" if split[i] != "test" else "train"
    planted = moved.set_column(3, "text", pa.array(text))
    planted = planted.set_column(5, "split", pa.array(split))
    assert check_leaks(planted).exact == 1


def test_time_split_cut_and_rebuild(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    write(lake, [curated_row(i) for i in range(100)])
    rules = SplitRules(group="dup_group", time_field="published")
    v = cut_dataset(lake, "t", "a", "labels/p", "body", fractions=(0.8, 0.1, 0.1), rules=rules)
    assert v.lineage["split"]["stratify"] is False  # a time split ignores labels
    data = lake.read("datasets/t", v.version)
    published = {curated_row(i)["url"]: ARTICLES[i].published for i in range(100)}
    times = {
        s: [published[u] for u, x in splits_of(data).items() if x == s]
        for s in ("train", "validation", "test")
    }
    assert max(times["train"]) <= min(times["validation"])
    assert max(times["validation"]) <= min(times["test"])
    assert [len(times[s]) for s in ("train", "validation", "test")] == [80, 10, 10]
    assert v.lineage["time_ranges"]["test"][1] == max(published.values())
    assert rebuild_dataset(lake, "t").identical


def test_bad_group_or_time_field_is_named(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    write(lake, [curated_row(i) for i in range(20)])
    with pytest.raises(Exception, match="time field 'when' is not in curated/a"):
        cut_dataset(lake, "d", "a", "labels/p", "body", rules=SplitRules(time_field="when"))
    with pytest.raises(Exception, match="group column 'story' is not in curated/a"):
        cut_dataset(lake, "d", "a", "labels/p", "body", rules=SplitRules(group="story"))


def test_repeated_content_in_a_later_source_is_left_out(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    rows = [curated_row(i) for i in range(40)]
    # source b crawled five of a's pages again: the same content, so the same hash
    rows += [{**curated_row(i, "b"), "content_sha256": f"a{i}"} for i in range(5)]
    write(lake, rows)
    v = cut_dataset(lake, "d", ["a", "b"], "labels/p", "body")
    data = lake.read("datasets/d", v.version)
    assert v.rows == 40 and v.lineage["repeats_dropped"] == 5
    assert set(data["source"].to_pylist()) == {"a"}
    assert len(set(data["row_id"].to_pylist())) == 40


def test_rebuilt_identically_and_reused(tmp_path: Path) -> None:
    lake = near_copies_lake(tmp_path, n=60, copies=20)
    v = cut_dataset(lake, "d", ["a", "b"], "labels/p", {"a": "body", "b": "body"}, seed=2)
    again = cut_dataset(lake, "d", ["a", "b"], "labels/p", "body", seed=2)
    assert again.reused and again.version == v.version
    r = rebuild_dataset(lake, "d", v.version)
    assert r.identical and r.sha256 == v.lineage["content_sha256"]
    assert r.table.equals(lake.read("datasets/d", v.version))
    other = cut_dataset(
        lake, "d", ["a", "b"], "labels/p", "body", seed=2, rules=SplitRules(stratify=False)
    )
    assert not other.reused and other.version == v.version + 1


def test_versions_cut_before_split_rules_rebuild_row_by_row(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    write(lake, [curated_row(i) for i in range(50)])
    v = cut_dataset(lake, "new", "a", "labels/p", "body", seed=3, rules=LEGACY)
    # the same rows under a lineage as versions were written before rules were recorded
    old = {
        k: v.lineage[k]
        for k in (
            "tables",
            "curated",
            "labels",
            "seed",
            "fractions",
            "text_field",
            "content_sha256",
        )
    }
    lake.overwrite("datasets/old", lake.read("datasets/new"), old)
    assert rebuild_dataset(lake, "old").identical
    assert dataset_lineage(lake, "old")[1].get("split") is None
    assert cut_dataset(lake, "old", "a", "labels/p", "body", seed=3, rules=LEGACY).reused


def recipe(tmp_path: Path, name: str, **extra: object) -> Path:
    sources = tmp_path / "sources"
    sources.mkdir(exist_ok=True)
    spec = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    spec.update(name=name, **extra)
    (sources / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return sources


def test_dataset_create_command(lake_env: dict[str, str], tmp_path: Path) -> None:
    lake = Lake(lake_env["HARVEST_LAKE"])
    rows = [curated_row(i) for i in range(60)]
    rows += [curated_row(i, "b", edited(body(i))) for i in range(20)]
    write(lake, rows)
    recipe(tmp_path, "a")
    env = {**lake_env, "HARVEST_SOURCES": str(recipe(tmp_path, "b"))}

    leaky = ["dataset", "create", "d", "--from", "a,b", "--labels", "p", "--group", "none"]
    proc = run_harvest(leaky, env, check=False)
    assert proc.returncode == 1, proc.stderr  # the leak check found copies across splits
    assert "dataset 'd' not written" in proc.stderr
    assert "pair(s) of rows are duplicates across splits" in proc.stderr
    assert not lake.exists("datasets/d")

    args = ["dataset", "create", "d", "--from", "a,b", "--labels", "p", "--split", "0.6/0.2/0.2"]
    made = last_json(run_harvest(args, env).stdout)
    assert list(made) == [
        "dataset",
        "version",
        "rows",
        "reused",
        "splits",
        "tables",
        "split_rules",
        "groups",
        "leakage",
        "content_sha256",
    ]
    assert made["version"] == 0 and made["rows"] == 80 and made["reused"] is False
    assert made["leakage"] == {"exact": 0, "near": 0, "near_threshold": 0.7}
    assert made["tables"] == {"curated/a": 0, "curated/b": 0, "labels/p": 0}
    sizes = made["splits"]
    assert sum(sizes.values()) == 80
    assert all(abs(sizes[s] - f * 80) <= 3 for s, f in zip(sizes, (0.6, 0.2, 0.2), strict=True))
    assert last_json(run_harvest(args, env).stdout)["reused"] is True
    data = lake.read("datasets/d")
    assert pc.sum(pc.equal(data["split"], "test")).as_py() == sizes["test"]

    timed = ["dataset", "create", "t", "--from", "a", "--labels", "p", "--time-split", "published"]
    assert last_json(run_harvest(timed, env).stdout)["split_rules"]["time_field"] == "published"
    bad = run_harvest([*args[:-1], "0.8/0.3/0.1"], env, check=False)
    assert bad.returncode == 2 and "add up to 1.2, not 1" in bad.stderr
    missing = run_harvest(
        ["dataset", "create", "x", "--from", "a", "--labels", "nope"], env, check=False
    )
    assert missing.returncode == 2 and "table 'labels/nope' does not exist yet" in missing.stderr


def test_a_cut_draws_test_and_validation_from_the_evaluation_reserve(tmp_path: Path) -> None:
    from ingestion.datasets import build_dataset, dataset_lineage

    lake = Lake(tmp_path / "lake")
    n = 120
    arts = [a for a in generate(n + 40, seed=5).articles if not a.planted][:n]
    ids = [f"h{i}" for i in range(n)]
    lake.append(
        "curated/s",
        pa.table(
            {
                "content_sha256": ids,
                "source": ["s"] * n,
                "url": [f"u{i}" for i in range(n)],
                "body": [" ".join(a.paragraphs) for a in arts],
            }
        ),
    )
    labels = ["a" if i % 3 else "b" for i in range(n)]
    lake.overwrite("labels/s", pa.table({"row_id": ids, "label": labels}))
    held = ids[::4]  # 30 rows a push drew at random
    lake.append("reserve/s", pa.table({"row_id": held}))
    cut = cut_dataset(lake, "d", "s", "labels/s", "body", seed=0)
    rows = lake.read("datasets/d").to_pylist()
    side = {r["row_id"]: r["split"] for r in rows}
    assert {side[i] for i in ids if i not in held} == {"train"}
    assert {side[i] for i in held} == {"test", "validation"}
    tests = [i for i in held if side[i] == "test"]
    assert 14 <= len(tests) <= 16  # test and validation alike, each class rounded up
    assert cut.lineage["test_from"] == "evaluation reserve" and cut.lineage["reserve_rows"] == 30
    # pinned: a rebuild reads the reserve as it was, whatever was reserved since
    lake.append("reserve/s", pa.table({"row_id": ids[1:5]}))
    _, lineage = dataset_lineage(lake, "d", cut.version)
    rebuilt = build_dataset(lake, "d", lineage).to_pylist()
    assert {r["row_id"]: r["split"] for r in rebuilt} == side


def test_the_label_report_counts_the_reserve_and_what_it_still_needs(tmp_path: Path) -> None:
    from labeling.report import ROWS_FOR_5_POINTS, reserve_section

    lake = Lake(tmp_path / "lake")
    lake.append("reserve/s", pa.table({"row_id": ["h1", "h2", "h3", "h9"]}))
    labels = [{"row_id": f"h{i}", "label": "a" if i < 3 else "b"} for i in range(6)]
    got = reserve_section(lake, "s", labels)
    assert (got["pushed"], got["labelled"], got["per_class"]) == (4, 3, {"a": 2, "b": 1})
    assert ROWS_FOR_5_POINTS == 385 and got["more_needed"] == 382
    assert reserve_section(lake, "other", labels)["labelled"] == 0
