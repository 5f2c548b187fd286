"""Tests of slice files and their manifest (slicing): writing, reading, checksums, make_slices."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from skillmix.data import slicing
from skillmix.data.slicing import (
    check_slice_set,
    make_slices,
    read_manifest,
    read_slices,
    write_slices,
)
from skillmix.data.sources import COLUMNS, SourceData, examples_frame
from skillmix.data.splitting import split_by_skill
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.slugs import skill_slug

LEGO = {"kind": "lego", "seed": 0, "lego": {"n_vars": 3, "examples_per_skill": 60}}
SPLIT = {"seed": 0, "val": 10, "test": 5, "max_train": None}


def make_data(counts: dict[str, int], origin: str = "test data") -> SourceData:
    """Return prompt/answer examples with ``counts[skill]`` rows per skill, ids ``{skill}/{j}``."""
    records: dict[str, list[str]] = {column: [] for column in COLUMNS}
    for skill, count in counts.items():
        for j in range(count):
            records["id"].append(f"{skill}/{j:04d}")
            records["skill"].append(skill)
            records["prompt"].append(f"q{j}")
            records["answer"].append(f"a{j}")
            records["text"].append(f"q{j} a{j}")
    return SourceData(examples_frame(records), list(counts), origin)


def leftovers(parent: Path) -> list[str]:
    """Return the names of everything in ``parent`` (to check that nothing was written)."""
    return sorted(path.name for path in parent.iterdir())


# --------------------------------------------------------------------------- writing and reading


def test_write_and_read_slices(tmp_path: Path) -> None:
    data = make_data({"Café au lait": 30, "digit-0": 20})
    splits = split_by_skill(data, 4, 3, seed=0)
    manifest = write_slices(splits, data.skills, tmp_path / "out", extra={"note": "x"})
    slug = skill_slug("Café au lait")
    for entry in manifest["skills"]:  # each split file's checksum, as the file on disk has it
        assert entry.pop("sha256") == {
            split: hashlib.sha256(
                (tmp_path / "out" / split / f"{entry['slug']}.parquet").read_bytes()
            ).hexdigest()
            for split in ("train", "val", "test")
        }
    assert manifest == {
        "skills": [
            {"name": "Café au lait", "slug": slug, "counts": {"train": 23, "val": 4, "test": 3}},
            {"name": "digit-0", "slug": "digit-0", "counts": {"train": 13, "val": 4, "test": 3}},
        ],
        "splits": ["train", "val", "test"],
        "columns": COLUMNS,
        "note": "x",
    }
    written = read_manifest(tmp_path / "out")
    assert [e.pop("sha256") for e in written["skills"]] and written == manifest
    assert leftovers(tmp_path) == ["out"]
    assert leftovers(tmp_path / "out") == ["manifest.json", "test", "train", "val"]
    for split in ("train", "val", "test"):
        paths = [tmp_path / "out" / split / f"{entry['slug']}.parquet" for entry in manifest["skills"]]
        assert all(path.is_file() for path in paths)
        frames = read_slices(paths, [entry["name"] for entry in manifest["skills"]], split)
        for entry in manifest["skills"]:
            expected = splits[split][splits[split]["skill"] == entry["name"]]
            pd.testing.assert_frame_equal(frames[entry["name"]], expected.reset_index(drop=True))
    with pytest.raises(SkillmixInputError, match=r"val: no slice file with rows for skills \['nope'\]"):
        read_slices(paths, ["nope"], "val")


def file_bytes(root: Path) -> dict[str, bytes]:
    """Return every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_slices_is_byte_stable_and_replaces_stale_files(tmp_path: Path) -> None:
    data = make_data({"a": 30, "b": 30})
    splits = split_by_skill(data, 4, 3, seed=0)
    write_slices(splits, data.skills, tmp_path / "one")
    write_slices(splits, data.skills, tmp_path / "two")
    assert file_bytes(tmp_path / "one") == file_bytes(tmp_path / "two")
    before = file_bytes(tmp_path / "one")
    write_slices(splits, data.skills, tmp_path / "one")  # rewrite in place
    assert file_bytes(tmp_path / "one") == before

    fewer = make_data({"a": 30})
    write_slices(split_by_skill(fewer, 4, 3, seed=0), fewer.skills, tmp_path / "one")
    assert sorted(file_bytes(tmp_path / "one")) == [
        "manifest.json",
        "test/a.parquet",
        "train/a.parquet",
        "val/a.parquet",
    ]
    assert file_bytes(tmp_path / "one")["train/a.parquet"] == before["train/a.parquet"]
    assert leftovers(tmp_path) == ["one", "two"]


def test_write_slices_failure_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    data = make_data({"a": 30, "b": 30})
    splits = split_by_skill(data, 4, 3, seed=0)
    real_write = slicing._write_parquet
    calls = []

    def failing_write(frame: pd.DataFrame, path: Path) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(frame, path)

    monkeypatch.setattr(slicing, "_write_parquet", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_slices(splits, data.skills, tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_write_slices_rejects_bad_arguments(tmp_path: Path) -> None:
    data = make_data({"a": 30, "b": 30})
    splits = split_by_skill(data, 4, 3, seed=0)
    with pytest.raises(SkillmixInputError, match=r"skill\(s\) \['b'\] not in the skill list"):
        write_slices(splits, ["a"], tmp_path / "out")
    with pytest.raises(SkillmixInputError, match="reserved"):
        write_slices(splits, data.skills, tmp_path / "out", extra={"skills": []})
    with pytest.raises(SkillmixInputError, match="expected splits"):
        write_slices({"train": splits["train"]}, data.skills, tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(SkillmixInputError, match="manifest not found"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"skills": []}))
    with pytest.raises(SkillmixInputError, match="lacks key 'splits'"):
        read_manifest(tmp_path)


# --------------------------------------------------------------------------- make_slices


def test_make_slices_lego(tmp_path: Path) -> None:
    manifest = make_slices(LEGO, SPLIT, tmp_path / "slices")
    assert [entry["slug"] for entry in manifest["skills"]] == ["lego-1", "lego-2", "lego-3"]
    assert all(e["counts"] == {"train": 45, "val": 10, "test": 5} for e in manifest["skills"])
    assert manifest["split"] == SPLIT
    assert manifest["source"] == {"kind": "lego", "origin": "lego generator"}
    frame = read_slices([tmp_path / "slices/train/lego-2.parquet"])["lego-2"]
    assert len(frame) == 45 and (frame["skill"] == "lego-2").all()
    again = make_slices(LEGO, SPLIT, tmp_path / "again")
    assert again == manifest
    assert file_bytes(tmp_path / "slices") == file_bytes(tmp_path / "again")


def test_make_slices_table_and_max_train(tmp_path: Path) -> None:
    rows = [{"skill": f"Skill {i % 3}", "text": f"document {i}"} for i in range(60)]
    pd.DataFrame(rows).to_parquet(tmp_path / "docs.parquet", index=False)
    source = {"kind": "table", "table": {"path": "docs.parquet", "text_column": "text"}}
    manifest = make_slices(
        source, {"val": 0.25, "test": 2, "max_train": 3}, tmp_path / "out", base_dir=tmp_path
    )
    assert [e["name"] for e in manifest["skills"]] == ["Skill 0", "Skill 1", "Skill 2"]
    assert all(e["counts"] == {"train": 3, "val": 5, "test": 2} for e in manifest["skills"])
    assert manifest["split"] == {"seed": 0, "val": 0.25, "test": 2, "max_train": 3}


@pytest.mark.parametrize(
    ("source", "split", "message"),
    [
        (LEGO, {**SPLIT, "val": 50, "test": 10}, r"skill 'lego-1' has 60 .*train split"),
        (LEGO, {**SPLIT, "vall": 3}, r"split.*unknown key.*vall"),
        (LEGO, {**SPLIT, "test": 0}, r"split\.test"),
        ({**LEGO, "kind": "legos"}, SPLIT, r"source\.kind"),
        (
            {"kind": "table", "table": {"path": "docs.jsonl", "text_column": "body"}},
            SPLIT,
            r"docs\.jsonl: column 'body'.*available columns",
        ),
        (
            {"kind": "table", "table": {"path": "docs.jsonl", "text_column": "text"}},
            SPLIT,
            r"docs\.jsonl: row row-000001 has an empty or null skill",
        ),
    ],
)
def test_make_slices_bad_input_writes_nothing(
    tmp_path: Path, source: dict, split: dict, message: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "docs.jsonl").write_text('{"skill": "a", "text": "x"}\n{"skill": null, "text": "y"}\n')
    with pytest.raises(SkillmixInputError, match=message):
        make_slices(source, split, tmp_path / "out" / "slices", base_dir=work)
    assert leftovers(tmp_path) == ["work"]


@pytest.mark.parametrize("damage", ["empty", "flipped", "removed"])
def test_a_damaged_slice_is_caught_by_its_readers(tmp_path: Path, damage: str) -> None:
    data = make_data({"a": 30, "b": 30})
    manifest = write_slices(split_by_skill(data, 4, 3, seed=0), data.skills, tmp_path / "out")
    paths = [tmp_path / "out" / "train" / f"{e['slug']}.parquet" for e in manifest["skills"]]
    check_slice_set(tmp_path / "out" / "manifest.json")  # intact: passes
    victim = paths[1]
    if damage == "empty":
        victim.write_bytes(b"")
    elif damage == "flipped":
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        victim.write_bytes(bytes(raw))
    else:
        victim.unlink()
    words = "missing" if damage == "removed" else "damaged or changed after slicing"
    with pytest.raises(SkillmixInputError, match=rf"train/b\.parquet: slice file {words}.*--forcerun slice"):
        read_slices(paths, ["a", "b"], "train")
    with pytest.raises(SkillmixInputError, match=r"train/b\.parquet"):
        check_slice_set(tmp_path / "out")
    read_slices(paths[:1], ["a"], "train")  # the intact file still reads


def test_a_manifest_slug_that_leaves_the_slices_folder_is_refused(tmp_path: Path) -> None:
    data = make_data({"a": 30, "b": 30})
    write_slices(split_by_skill(data, 4, 3, seed=0), data.skills, tmp_path / "out")
    path = tmp_path / "out" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["skills"][0]["slug"] = "../../../etc/passwd"
    path.write_text(json.dumps(manifest))
    with pytest.raises(SkillmixInputError, match=r"slug '../../../etc/passwd', not the slug slicing gives"):
        read_manifest(path)
