"""Tests of skill slugs, example validation, per-skill splits and slice files."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from skillmix.data import slicing
from skillmix.data.slicing import (
    check_slice_set,
    make_slices,
    read_manifest,
    read_slices,
    split_by_skill,
    validate_examples,
    write_slices,
)
from skillmix.data.sources import COLUMNS, SourceData, examples_frame
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.slugs import SLUG_PATTERN, skill_slug

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


# --------------------------------------------------------------------------- slugs

TRICKY_NAMES = [
    "Café au lait",
    "cafe au lait",
    "a/b",
    "a-b",
    "a b",
    "a__b",
    "a_b",
    "A_B",
    "-lead_and_trail_",
    "日本語",
    "中文",
    "   ",
    "x" * 61,
    "x" * 60,
    "digit-0",
    "Digit 0",
    "..",
    "con/../../etc",
]


def test_safe_names_are_their_own_slug() -> None:
    for name in ["digit-0", "lego-12", "code_to_text", "task126_scan-x", "a", "x" * 60]:
        assert skill_slug(name) == name


def test_slug_properties() -> None:
    slugs = [skill_slug(name) for name in TRICKY_NAMES]
    assert len(set(slugs)) == len(TRICKY_NAMES)
    for name, slug in zip(TRICKY_NAMES, slugs, strict=True):
        assert re.fullmatch(SLUG_PATTERN, slug), (name, slug)
        assert "__" not in slug and "/" not in slug
        assert len(slug) <= 60
        assert skill_slug(name) == slug  # stable
    digest = hashlib.sha1("Café au lait".encode()).hexdigest()[:8]
    assert skill_slug("Café au lait") == f"cafe-au-lait-{digest}"
    assert skill_slug("日本語") == f"skill-{hashlib.sha1('日本語'.encode()).hexdigest()[:8]}"
    assert skill_slug("a__b").startswith("a-b-")
    assert skill_slug("x" * 61) == "x" * 40 + "-" + hashlib.sha1(b"x" * 61).hexdigest()[:8]


# --------------------------------------------------------------------------- validation


def replace_cell(data: SourceData, row: int, column: str, value: str) -> SourceData:
    """Return a copy of ``data`` with one cell replaced."""
    frame = data.examples.copy()
    frame.loc[row, column] = value
    return SourceData(frame, list(data.skills), data.origin)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: replace_cell(d, 1, "id", "s1/0000"), r"test data: 1 duplicated id.*s1/0000"),
        (lambda d: replace_cell(d, 1, "skill", " "), r"empty skill.*s1/0001"),
        (lambda d: replace_cell(d, 2, "answer", ""), r"s1/0002.*empty answer"),
        (lambda d: replace_cell(d, 2, "text", ""), r"s1/0002.*empty text"),
        (lambda d: replace_cell(d, 2, "skill", "s9"), r"skill\(s\) \['s9'\] are not in the"),
        (lambda d: SourceData(d.examples, ["s1", "s2", "s3"], d.origin), r"without examples.*s3"),
        (lambda d: SourceData(d.examples, ["s1", "s2", "s1"], d.origin), r"more than once.*s1"),
        (
            lambda d: SourceData(d.examples[["id", "skill", "text"]], d.skills, d.origin),
            "expected columns",
        ),
    ],
)
def test_validate_examples_rejects(change, message: str) -> None:
    data = make_data({"s1": 5, "s2": 5})
    validate_examples(data)
    with pytest.raises(SkillmixInputError, match=message):
        validate_examples(change(data))


def test_validate_examples_rejects_slug_collision() -> None:
    colliding = skill_slug("Foo")
    data = make_data({"Foo": 3, colliding: 3})
    with pytest.raises(SkillmixInputError, match=rf"'Foo' and '{colliding}'.*same slug"):
        validate_examples(data)


def test_validate_examples_accepts_plain_text_rows() -> None:
    frame = examples_frame(
        {
            "id": ["1", "2"],
            "skill": ["web", "web"],
            "prompt": ["", ""],
            "answer": ["", ""],
            "text": ["some text", "more text"],
        }
    )
    validate_examples(SourceData(frame, ["web"], "texts"))


# --------------------------------------------------------------------------- splits


def test_split_sizes_disjoint_and_complete() -> None:
    data = make_data({"b": 50, "a": 30})
    splits = split_by_skill(data, val=10, test=5, seed=0)
    for frame in splits.values():
        assert list(frame.columns) == COLUMNS
        assert frame["skill"].drop_duplicates().tolist() == ["b", "a"]  # skill order kept
    sizes = {split: frame.groupby("skill").size().to_dict() for split, frame in splits.items()}
    assert sizes == {
        "train": {"a": 15, "b": 35},
        "val": {"a": 10, "b": 10},
        "test": {"a": 5, "b": 5},
    }
    ids = [set(frame["id"]) for frame in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(data.examples["id"])
    assert splits["val"]["id"].tolist() != sorted(splits["val"]["id"])  # permuted


def test_split_fractions_and_max_train() -> None:
    data = make_data({"a": 50, "b": 7})
    splits = split_by_skill(data, val=0.1, test=0.2, seed=1, max_train=20)
    sizes = {split: frame.groupby("skill").size().to_dict() for split, frame in splits.items()}
    # a: val round(5.0) = 5, test 10, train min(35, 20); b: val max(1, round(0.7)) = 1, test 1
    assert sizes == {"train": {"a": 20, "b": 5}, "val": {"a": 5, "b": 1}, "test": {"a": 10, "b": 1}}


def test_split_determinism_and_seed() -> None:
    data = make_data({"a": 40, "b": 40})
    first = split_by_skill(data, 5, 5, seed=0)
    again = split_by_skill(data, 5, 5, seed=0)
    for split in first:
        pd.testing.assert_frame_equal(first[split], again[split])
    other = split_by_skill(data, 5, 5, seed=1)
    assert first["val"]["id"].tolist() != other["val"]["id"].tolist()


def test_split_independent_of_other_skills_and_row_order() -> None:
    base = split_by_skill(make_data({"a": 40}), 5, 5, seed=3)
    more = make_data({"z": 30, "a": 40, "m": 25})
    shuffled = SourceData(
        more.examples.sample(frac=1, random_state=7).reset_index(drop=True), more.skills, "x"
    )
    for data in (more, shuffled):
        splits = split_by_skill(data, 5, 5, seed=3)
        for split in base:
            only_a = splits[split][splits[split]["skill"] == "a"].reset_index(drop=True)
            pd.testing.assert_frame_equal(only_a, base[split])


def test_split_too_small_names_skill_and_split() -> None:
    data = make_data({"big": 500, "small": 150})
    with pytest.raises(SkillmixInputError, match=r"skill 'small' has 150 .*train split would be"):
        split_by_skill(data, val=100, test=100, seed=0)
    with pytest.raises(SkillmixInputError, match=r"skill 'small' has 150 .*test split would be"):
        split_by_skill(data, val=150, test=1, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val": 0}, r"split\.val"),
        ({"test": 1.5}, r"split\.test"),
        ({"val": True}, r"split\.val"),
        ({"seed": -2}, r"split\.seed"),
        ({"max_train": 0}, r"split\.max_train"),
    ],
)
def test_split_rejects_bad_settings(kwargs: dict, message: str) -> None:
    args = {"val": 2, "test": 2, "seed": 0, **kwargs}
    with pytest.raises(SkillmixInputError, match=message):
        split_by_skill(make_data({"a": 20}), **args)


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
