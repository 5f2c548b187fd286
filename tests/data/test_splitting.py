"""Tests of skill slugs, example validation and per-skill splits (splitting)."""

from __future__ import annotations

import hashlib
import re

import pandas as pd
import pytest

from skillmix.data.sources import COLUMNS, SourceData, examples_frame
from skillmix.data.splitting import split_by_skill, validate_examples
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.slugs import SLUG_PATTERN, skill_slug


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
