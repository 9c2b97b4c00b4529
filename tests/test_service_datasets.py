"""`harvest serve` for real on loopback: POST /datasets cuts a version from curated and
labelled rows, POST /exports writes it with a manifest, and neither acts without the token."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from harvest.demosite import generate
from ingestion.lake import Lake
from tests.helpers import ROOT
from tests.service import Live

pytestmark = pytest.mark.slow
PER_CLASS = 15


def write_source(live: Live, name: str) -> dict[str, str]:
    """A recipe for ``name`` (never crawled), its curated rows and their labels: 15 distinct
    articles of each of the four classes. Returns row id -> label."""
    recipe = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    recipe["name"] = name
    (live.sources / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    per: Counter[str] = Counter()
    rows, labels = [], {}
    for i, article in enumerate(a for a in generate(300, seed=11).articles if not a.planted):
        if per[article.label] >= PER_CLASS:
            continue
        per[article.label] += 1
        row_id = f"{name}{i}"
        rows.append(
            {
                "content_sha256": row_id,
                "source": name,
                "url": f"http://{name}/{i}",
                "body": " ".join(article.paragraphs),
                "dup_group": row_id,
                "published": article.published,
            }
        )
        labels[row_id] = article.label
    assert len(per) == 4 and set(per.values()) == {PER_CLASS}
    assert len({r["body"] for r in rows}) == len(rows)
    lake = Lake(Path(live.env["HARVEST_LAKE"]))
    lake.append(f"curated/{name}", pa.Table.from_pylist(rows))
    lake.overwrite(
        f"labels/{name}",
        pa.Table.from_pylist([{"row_id": k, "label": v} for k, v in sorted(labels.items())]),
    )
    return labels


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_create_and_export_a_dataset(live: Live) -> None:
    labels = write_source(live, "news")
    live.start()
    request = {"name": "corpus", "sources": ["news"], "labels": "news", "split": "0.8/0.1/0.1"}

    created = live.post("/datasets", json=request)
    assert created.status_code == 201, created.text
    made = created.json()
    version = made["version"]
    assert made["dataset"] == "corpus" and made["rows"] == len(labels)
    assert made["reused"] is False

    listed = live.get("/datasets/corpus")
    assert listed.status_code == 200, listed.text
    versions = listed.json()["versions"]
    assert [v["version"] for v in versions] == [version]
    assert versions[0]["rows"] == len(labels)
    assert versions[0]["counts"] == made["splits"]
    assert datetime.fromisoformat(versions[0]["created"]).tzinfo is not None

    data = Lake(Path(live.env["HARVEST_LAKE"])).read("datasets/corpus")
    assert data.num_rows == len(labels)
    splits = data["split"].to_pylist()
    assert set(splits) == {"train", "validation", "test"}
    counts = Counter(splits)
    assert counts["train"] > counts["validation"] and counts["train"] > counts["test"]
    # stratified: every class in every split
    per = Counter(zip(data["label"].to_pylist(), splits, strict=True))
    assert all(per[(label, s)] > 0 for label in set(labels.values()) for s in counts)
    assert dict(zip(data["row_id"].to_pylist(), data["label"].to_pylist(), strict=True)) == labels

    exported = live.post("/exports", json={"dataset": "corpus", "version": version})
    assert exported.status_code == 201, exported.text
    export = exported.json()
    assert export["version"] == version and export["rows"] == len(labels)
    assert export["splits"] == dict(counts) == made["splits"]
    out = Path(export["export_dir"])
    assert out.is_dir()
    assert out.is_relative_to(Path(live.env["HARVEST_REPORTS"]) / "exports" / "corpus")
    manifest_path = out / "manifest.json"
    assert Path(export["manifest"]) == manifest_path
    manifest = json.loads(manifest_path.read_text())
    assert manifest["dataset"] == "corpus" and manifest["version"] == version
    assert {f["split"] for f in manifest["files"]} == {"train", "validation", "test"}
    assert sum(f["rows"] for f in manifest["files"]) == len(labels)
    for entry in [*manifest["files"], manifest["card"]]:
        path = out / entry["path"]
        assert path.is_file(), entry
        assert sha256(path) == entry["sha256"], entry["path"]

    # without the token: refused, and no version is cut
    denied = live.post("/datasets", auth=False, json={**request, "seed": 1})
    assert denied.status_code == 401, denied.text
    wrong = live.post(
        "/datasets",
        auth=False,
        json={**request, "seed": 1},
        headers={"Authorization": "Bearer not-the-token"},
    )
    assert wrong.status_code == 401, wrong.text
    after = live.get("/datasets/corpus").json()["versions"]
    assert [v["version"] for v in after] == [version]
    assert live.post("/exports", auth=False, json={"dataset": "corpus"}).status_code == 401
