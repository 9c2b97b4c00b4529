"""Exact and near duplicates: measured on the demo site's planted copies, within a batch
and against what ``curated`` already holds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from harvest.demosite import Site, generate
from harvest.recipe import load_recipe
from harvest.stages import gate_spec
from ingestion.dedup import EXACT, NEAR, Deduper
from ingestion.lake import Lake, LakeError
from ingestion.minhash import NearDuplicates, normal, shingles
from ingestion.schema import content_sha256
from tests.helpers import ROOT

BASE = "http://news.test"
INVALID = {"empty_body", "bad_date", "too_long"}


def rows(site: Site, kinds: set[str] | None = None) -> pd.DataFrame:
    """The rows the gate would pass on to dedup: every article but the invalid ones."""
    out = []
    for a in site.articles:
        if a.planted in INVALID or (kinds is not None and a.planted not in kinds):
            continue
        fields = {
            "title": a.title,
            "body": "\n".join(a.paragraphs),
            "author": a.author,
            "published": a.published,
            "tags": a.tags,
        }
        out.append({"url": BASE + a.path, **fields, "content_sha256": content_sha256(fields)})
    df = pd.DataFrame(out).sort_values("url").reset_index(drop=True)
    return pa.Table.from_pandas(df, preserve_index=False).to_pandas(types_mapper=pd.ArrowDtype)


def near_pairs(dropped: pd.DataFrame) -> dict[str, str]:
    near = dropped[dropped["reason"] == NEAR]
    return dict(zip(near["url"], near["duplicate_of"], strict=True))


def score(found: dict[str, str], planted: dict[str, str]) -> tuple[float, float, int]:
    """Precision and recall against the planted pairs; a pair counts whichever side was kept."""
    hits = sum(1 for c, o in found.items() if planted.get(c) == o or planted.get(o) == c)
    recall = sum(1 for c, o in planted.items() if found.get(c) == o or found.get(o) == c)
    return hits / max(1, len(found)), recall / len(planted), len(planted)


def test_precision_and_recall_on_planted_near_duplicates(tmp_path: Path) -> None:
    site = generate(2000, seed=5)
    truth = site.truth(BASE)
    result = Deduper(Lake(tmp_path), "demo", "body")(rows(site))
    precision, recall, n = score(near_pairs(result.dropped), truth["near_duplicates"])  # type: ignore[arg-type]
    print(
        f"\nsynthetic site, {n} planted near duplicates: precision {precision:.3f}, "
        f"recall {recall:.3f}"
    )
    assert precision >= 0.95 and recall >= 0.9
    assert result.exact == len(site.planted_duplicates)
    exact = result.dropped[result.dropped["reason"] == EXACT]
    assert dict(zip(exact["url"], exact["duplicate_of"], strict=True)) == truth["duplicates"]


def test_recall_on_real_news_and_every_pair_found_is_near(tmp_path: Path, ag_news: Path) -> None:
    """AG News holds near duplicates of its own (one story from two wires): precision is
    measured against the true Jaccard of each pair found, recall against the planted ones."""
    site = generate(3000, seed=5, corpus=ag_news)
    truth = site.truth(BASE)
    df = rows(site)
    result = Deduper(Lake(tmp_path), "demo", "body")(df)
    found = near_pairs(result.dropped)
    planted_precision, recall, n = score(found, truth["near_duplicates"])  # type: ignore[arg-type]
    body = dict(zip(df["url"], df["body"], strict=True))
    near = NearDuplicates()

    def jaccard(a: str, b: str) -> float:
        x, y = set(shingles(body[a], near.shingle)), set(shingles(body[b], near.shingle))
        return len(x & y) / len(x | y)

    true_near = sum(1 for c, o in found.items() if jaccard(c, o) >= near.threshold - 0.1)
    precision = true_near / len(found)
    print(
        f"\nAG News site, {n} planted near duplicates: recall {recall:.3f}; {len(found)} "
        f"pairs found, {len(found) - round(planted_precision * len(found))} of them the "
        f"corpus's own; precision by true Jaccard {precision:.3f}"
    )
    assert recall >= 0.9 and precision >= 0.95


def test_a_batch_is_decided_as_by_comparing_every_pair(tmp_path: Path) -> None:
    """Within a batch, rows that share no band key skip the candidate lookups; the
    answer must be the one every earlier kept row compared with every later row gives:
    a row is a near duplicate of the kept row before it it shares a band with and is most
    similar to (the first on a tie), if that similarity reaches the threshold."""
    import random

    rng = random.Random()
    words = [f"w{i}" for i in range(400)]
    texts: list[str] = []
    for _ in range(rng.randint(40, 70)):  # families of edits of one text, shuffled together
        base = rng.choices(words, k=rng.randint(30, 80))
        texts.append(" ".join(base))
        for _ in range(rng.randint(0, 4)):
            edit = [rng.choice(words) if rng.random() < rng.uniform(0, 0.3) else w for w in base]
            texts.append(" ".join(edit))
    rng.shuffle(texts)
    texts += ["", "short"]
    df = pd.DataFrame(
        {
            "url": [f"{BASE}/{i}" for i in range(len(texts))],
            "body": texts,
            "content_sha256": [f"{i:064x}" for i in range(len(texts))],
        }
    )
    result = Deduper(Lake(tmp_path), "demo", "body")(df)

    near = NearDuplicates()
    sigs, valid = near.signatures(texts)
    keys = near.band_keys(sigs)
    kept: list[int] = []
    want: dict[str, str] = {}
    for i in range(len(texts)):
        best: tuple[float, int] | None = None
        for j in kept:
            sim = near.similarity(sigs[i], sigs[j])
            candidate = valid[i] and valid[j] and (keys[i] == keys[j]).any()
            if candidate and sim >= near.threshold and (best is None or sim > best[0]):
                best = (sim, j)
        if best is None:
            kept.append(i)
        else:
            want[f"{BASE}/{i}"] = f"{BASE}/{best[1]}"
    assert near_pairs(result.dropped) == want
    assert want, "the families made no near duplicate to decide"


def test_against_the_table_across_two_batches(tmp_path: Path) -> None:
    site = generate(400, seed=2)
    truth = site.truth(BASE)
    lake = Lake(tmp_path)
    first = Deduper(lake, "demo", "body")(rows(site, {""}))
    assert first.exact == first.near == 0
    assert (first.kept["dup_group"] == first.kept["content_sha256"]).all()
    lake.append("curated/demo", pa.Table.from_pandas(first.kept, preserve_index=False))

    # the copies arrive in a later batch, with one original crawled again under a new URL
    later = rows(site, {"duplicate", "near_duplicate"})
    again = rows(site, {""}).iloc[:1].assign(url=BASE + "/article/moved")
    batch = pd.concat([later, again], ignore_index=True)
    second = Deduper(lake, "demo", "body")(batch)
    assert second.kept.empty
    dropped = second.dropped.set_index("url")
    group_of = dict(zip(first.kept["url"], first.kept["dup_group"], strict=True))
    copies = {**truth["duplicates"], **truth["near_duplicates"]}  # type: ignore[dict-item]
    copies[BASE + "/article/moved"] = first.kept["url"].iloc[0]
    for copy, original in copies.items():
        assert dropped.loc[copy, "duplicate_of"] == original
        assert dropped.loc[copy, "dup_group"] == group_of[original]
    assert second.near == len(site.planted_near_duplicates)
    assert second.exact == len(site.planted_duplicates) + 1

    # the table is read in slices, never whole: any slice size gives the same answer
    sliced = Deduper(lake, "demo", "body", scan_rows=7, index=False)(batch)
    pd.testing.assert_frame_equal(sliced.dropped, second.dropped)


def test_signatures_written_fixed_size_are_read_back_from_the_table(tmp_path: Path) -> None:
    """Delta has no fixed-size binary: signatures written as one come back as plain binary."""
    site = generate(120, seed=3)
    lake = Lake(tmp_path)
    first = Deduper(lake, "demo", "body")(rows(site, {""}))
    table = pa.Table.from_pandas(first.kept, preserve_index=False)
    width = NearDuplicates().num_perm * 4
    at = table.schema.get_field_index("minhash")
    table = table.set_column(at, "minhash", table["minhash"].cast(pa.binary(width)))
    lake.append("curated/demo", table)
    assert lake.read("curated/demo").schema.field("minhash").type == pa.binary()

    later = rows(site, {"near_duplicate"})
    second = Deduper(lake, "demo", "body")(later)
    assert second.near == len(site.planted_near_duplicates) > 0 and second.kept.empty


def test_blank_text_is_never_a_near_duplicate(tmp_path: Path) -> None:
    df = rows(generate(80, seed=1), {""}).iloc[:3].copy()
    df["body"] = pd.array([None, "", " ... "], dtype=pd.ArrowDtype(pa.string()))
    result = Deduper(Lake(tmp_path), "demo", "body")(df)
    assert len(result.kept) == 3 and result.kept["minhash"].isna().all()


def test_gate_drops_near_duplicates_and_keeps_them_with_the_reason(tmp_path: Path) -> None:
    """Two crawls through the real gate: the second brings near copies of the first's rows."""
    from validation.gate import curate

    site = generate(200, seed=9)
    truth = site.truth(BASE)
    spec = gate_spec(load_recipe("demo", ROOT / "sources"))
    lake = Lake(tmp_path / "lake")
    raw = rows(site).drop(columns=["content_sha256"])
    originals = set(truth["near_duplicates"].values())  # type: ignore[union-attr]
    late = raw["url"].isin(set(truth["near_duplicates"]))  # type: ignore[arg-type]
    results = []
    for part in (raw[~late], raw[late]):
        lake.append("raw/demo", raw_table(part))
        results.append(curate(lake, "demo", spec, tmp_path / "reports"))
    first, second = results
    assert first.near_duplicates_dropped == 0
    assert second.near_duplicates_dropped == len(originals) and second.curated == 0
    curated = lake.read("curated/demo").to_pandas()
    assert curated["dup_group"].notna().all() and curated["language"].eq("en").all()
    held = lake.read("duplicates/demo").to_pandas()
    near = held[held["reason"] == NEAR].set_index("url")
    group_of = dict(zip(curated["url"], curated["dup_group"], strict=True))
    for copy, original in truth["near_duplicates"].items():  # type: ignore[union-attr]
        assert near.loc[copy, "duplicate_of"] == original
        assert near.loc[copy, "dup_group"] == group_of[original]
        assert near.loc[copy, "similarity"] >= NearDuplicates().threshold


def raw_table(df: pd.DataFrame) -> pa.Table:
    """Rows as the crawler lands them in ``raw``: the fields plus provenance."""
    out = []
    for r in df.to_dict("records"):
        fields = {k: r[k] for k in ("title", "body", "author", "published", "tags")}
        fields["tags"] = list(fields["tags"])
        out.append(
            {
                **fields,
                "source": "demo",
                "url": r["url"],
                "crawl_id": "c1",
                "fetched_at": pd.Timestamp("2024-01-01", tz="UTC"),
                "http_status": 200,
                "content_sha256": content_sha256(fields),
            }
        )
    return pa.Table.from_pylist(out)


@pytest.mark.parametrize("text", ["Hello, World!", "hello   world", "HELLO world."])
def test_shingles_ignore_case_and_punctuation(text: str) -> None:
    assert set(shingles(text, 5)) == set(shingles("hello world", 5))


def test_normal_text_is_the_same_on_the_ascii_path_and_the_unicode_one() -> None:
    """ASCII text takes a byte translation instead of the regex; both must give what the
    signatures stored before it did: lower case, runs of non-word characters as one space."""
    import random
    import re
    import string

    def reference(text: str) -> bytes:
        return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split()).encode("utf-8")

    rng = random.Random()
    ascii_chars = string.printable + "\x00\x1f\x7f"
    texts = ["".join(rng.choices(ascii_chars, k=rng.randint(0, 200))) for _ in range(500)]
    unicode_chars = ascii_chars + "ÄÖü—’ß日本\u00a0\u2028ΣΟ"
    texts += ["".join(rng.choices(unicode_chars, k=80)) for _ in range(200)]
    texts += ["", " ", "__init__", "ΟΔΟΣ ΟΔΟΣ.", "a\u00a0b", "İstanbul"]
    for text in texts:
        assert normal(text) == reference(text), repr(text)


SHOP = """
name: shop
start_urls: ["http://127.0.0.1:9/"]
allow_private: true
fields:
  title: {css: "h1::text", type: str}
  body: {css: "p::text", type: text}
text_field: body
"""


def test_a_curated_file_gone_is_a_clear_error(tmp_path: Path, lake_env: dict[str, str]) -> None:
    """The band index is rebuilt by streaming curated/<source>: a data file deleted from
    under it ends the run with one line naming the table and the file, exit 2."""
    import os
    import shutil

    from tests.helpers import run_harvest

    lake = Lake(lake_env["HARVEST_LAKE"])
    (tmp_path / "shop.yaml").write_text(SHOP)
    recipe = str(tmp_path / "shop.yaml")

    def land(start: int) -> None:
        out = []
        for i in range(start, start + 5):
            fields = {"title": f"item {i}", "body": f"a page about item number {i} " * 5}
            out.append(
                {
                    **fields,
                    "source": "shop",
                    "url": f"http://shop/{i}",
                    "crawl_id": "c",
                    "http_status": 200,
                    "content_sha256": content_sha256(fields),
                }
            )
        lake.append("raw/shop", pa.Table.from_pylist(out))

    land(0)
    run_harvest(["curate", recipe], lake_env)
    gone = lake.table("curated/shop").file_uris()[0]
    os.remove(gone)
    shutil.rmtree(Path(lake.root) / "lsh" / "shop")  # what the index holds is read again
    with pytest.raises(LakeError, match=r"'curated/shop' cannot be read"):
        Deduper(lake, "shop", "body")(rows(generate(20, seed=4), {""}))

    land(5)
    proc = run_harvest(["curate", recipe], lake_env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "'curated/shop' cannot be read" in line and Path(gone).name in line
    assert lake.read("raw/shop").num_rows == 10  # nothing lost: the next run tries again


def test_signatures_are_datasketchs_minhash_of_the_shingles() -> None:
    """The batch computation gives the values MinHash.bulk gives shingle by shingle: the
    signatures already stored in curated tables stay comparable. Integer arithmetic only,
    so any CPU gives the same."""
    import random
    import zlib

    from datasketch import MinHash

    rng = random.Random()
    alphabet = "abcdefghij klmnop, ÄÖü éàç — ß 日本語 .!?\n"
    texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 300))) for _ in range(300)]
    texts += ["".join(rng.choices(alphabet[:17], k=rng.randint(0, 300))) for _ in range(100)]
    texts += ["", "   ", "ab", "abcd", "abcde", "!!!", "Hello, World! " * 40]
    texts.append(" ".join(rng.choices(["alpha", "beta", "gamma", "delta"], k=9_000)))  # long
    near = NearDuplicates()
    sigs, valid = near.signatures([*texts, None])
    assert not valid[-1]
    for text, sig, has in zip(texts, sigs, valid, strict=False):
        grams = shingles(text, near.shingle)
        assert has == bool(grams), text
        if grams:
            (want,) = MinHash.bulk([grams], num_perm=128, seed=near.seed, hashfunc=zlib.crc32)
            assert (sig == want.hashvalues).all(), text


def test_the_compiled_loops_run_where_no_cache_folder_can_be_written() -> None:
    """numba refuses to cache where it can write nowhere (a read-only install with no
    home); told to find no such folder, curation's loops compile in the process and give
    the same answers."""
    import os
    import subprocess
    import sys

    from numba.core import config

    if not hasattr(config, "CACHE_LOCATOR_CLASSES"):
        pytest.skip("this numba cannot be told to find no cache folder")
    texts = ["Hello, world: the quick brown fox.", None, "Le renard brun saute par-dessus."]
    code = (
        "from ingestion.minhash import NearDuplicates\n"
        "from ingestion.transforms.language import classify_batch, identifier\n"
        f"texts = {texts!r}\n"
        "sigs, valid = NearDuplicates().signatures(texts)\n"
        "print(sigs.sum(axis=1).tolist(), valid.tolist())\n"
        "print(classify_batch(identifier(), [t for t in texts if t])[0])\n"
    )
    # IPython's locator alone: it finds a folder only inside IPython, so none here
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "IPythonCacheLocator"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from ingestion.transforms.language import classify_batch, identifier

    sigs, valid = NearDuplicates().signatures(texts)
    codes = classify_batch(identifier(), [t for t in texts if t])[0]
    assert proc.stdout.splitlines() == [
        f"{sigs.sum(axis=1).tolist()} {valid.tolist()}",
        str(codes),
    ]
