"""Data whose meaning would change silently (issue 29): rows merged by a stray CSV quote, repeated
examples on both sides of the split, one skill name in two Unicode normal forms; and the slice
job's temporary folder left by a killed run."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from skillmix.data.slicing import make_slices, write_slices
from skillmix.data.sources import COLUMNS, SourceData, examples_frame, load_source, stable_seed
from skillmix.data.sources.tables import load_table, read_columns
from skillmix.data.splitting import split_by_skill
from skillmix.infra.errors import SkillmixInputError

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- CSV stray quotes


def _table_cfg(path: Path) -> dict:
    return {"path": str(path), "skill_column": "skill", "prompt_column": "prompt", "answer_column": "answer"}


def test_stray_quote_merging_rows_is_refused_naming_file_and_line(tmp_path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('skill,prompt,answer\na,"hello,world\na,foo,bar\na,"baz",qux\na,x,y\n', encoding="utf-8")
    # pandas alone reads three lines as one example and says nothing
    assert len(pd.read_csv(path, dtype=str)) == 2
    with pytest.raises(SkillmixInputError) as info:
        read_columns(path)
    message = str(info.value)
    assert str(path) in message and "line 2" in message and "stray quote" in message
    with pytest.raises(SkillmixInputError, match="merging"):
        load_table(_table_cfg(path))


def test_well_quoted_csv_keeps_multiline_cells_and_quotes(tmp_path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(
        'skill,prompt,answer\na,"two\nlines, one cell",x\na,"say ""hi""",y\nb,he said "hi",z\n',
        encoding="utf-8",
    )
    columns = read_columns(path)
    assert columns["prompt"] == ["two\nlines, one cell", 'say "hi"', 'he said "hi"']


def test_long_csv_cell_is_no_error(tmp_path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(f'skill,prompt,answer\na,"{"w " * 100_000}",x\n', encoding="utf-8")
    assert len(read_columns(path)["prompt"][0]) == 200_000


# --------------------------------------------------------------------------- repeated examples


def _data(rows: list[tuple[str, str, str]], repeats: bool = False) -> SourceData:
    records: dict[str, list[str]] = {column: [] for column in COLUMNS}
    for k, (skill, prompt, answer) in enumerate(rows):
        records["id"].append(f"r{k:04d}")
        records["skill"].append(skill)
        records["prompt"].append(prompt)
        records["answer"].append(answer)
        records["text"].append(f"{prompt} {answer}")
    return SourceData(examples_frame(records), sorted({r[0] for r in rows}), "test data", repeats)


def _old_split(data: SourceData, val, test, seed):
    """The split by rows, as it was before repeated examples were kept together."""
    out = {"train": [], "val": [], "test": []}
    for skill in data.skills:
        rows = data.examples[data.examples["skill"] == skill].sort_values("id", kind="stable")
        rows = rows.iloc[np.random.default_rng([seed, stable_seed(skill)]).permutation(len(rows))]
        n_val = val if isinstance(val, int) else max(1, int(val * len(rows) + 0.5))
        n_test = test if isinstance(test, int) else max(1, int(test * len(rows) + 0.5))
        out["val"].append(rows.iloc[:n_val])
        out["test"].append(rows.iloc[n_val : n_val + n_test])
        out["train"].append(rows.iloc[n_val + n_test :])
    return {k: pd.concat(v, ignore_index=True)[COLUMNS] for k, v in out.items()}


def test_repeated_examples_stay_on_one_side_of_the_split(caplog) -> None:
    rows = [("s", f"q{k % 7}", f"a{k % 7}") for k in range(40)] + [("s", f"u{k}", "b") for k in range(40)]
    splits = split_by_skill(_data(rows), 0.1, 0.2, seed=3)
    sides = {
        split: set(zip(frame["prompt"], frame["answer"], strict=True)) for split, frame in splits.items()
    }
    assert not sides["train"] & sides["test"] and not sides["train"] & sides["val"]
    assert not sides["val"] & sides["test"]
    assert sum(len(f) for f in splits.values()) == 80  # nothing dropped
    # sizes count distinct examples: 47 of them, 5 to val and 9 to test
    assert len(sides["val"]) == 5 and len(sides["test"]) == 9
    assert "repeat another one" in caplog.text


def test_without_repeats_the_split_is_the_one_by_rows() -> None:
    data = _data([("s", f"q{k}", "a") for k in range(50)] + [("t", f"p{k}", "b") for k in range(31)])
    for val, test in ((0.1, 0.2), (5, 3)):
        new, old = split_by_skill(data, val, test, seed=7), _old_split(data, val, test, 7)
        for split in new:
            pd.testing.assert_frame_equal(new[split], old[split])


def test_default_xor_source_splits_by_rows_as_before() -> None:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    data = load_source(cfg["source"], REPO)
    assert data.repeats and data.examples.duplicated(["skill", "prompt", "answer"]).any()
    split = cfg["split"]
    new = split_by_skill(data, split["val"], split["test"], split["seed"], split.get("max_train"))
    old = _old_split(data, split["val"], split["test"], split["seed"])
    for name in new:
        expected = old[name]
        if name == "train" and split.get("max_train") is not None:
            expected = pd.concat(
                [g.iloc[: split["max_train"]] for _, g in expected.groupby("skill", sort=False)],
                ignore_index=True,
            )
        pd.testing.assert_frame_equal(new[name], expected)


def test_too_many_repeats_says_how_many_distinct() -> None:
    data = _data([("s", "q", "a")] * 10 + [("s", "r", "b")])
    with pytest.raises(SkillmixInputError, match=r"has 11 examples, too few .* \(only 2 distinct"):
        split_by_skill(data, 1, 1, seed=0)


# --------------------------------------------------------------------------- Unicode normal forms


def test_one_skill_name_in_two_normal_forms_is_refused_with_both_escaped() -> None:
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    data = _data([(nfc, f"q{k}", "a") for k in range(6)] + [(nfd, f"p{k}", "b") for k in range(6)])
    with pytest.raises(SkillmixInputError) as info:
        split_by_skill(data, 1, 1, seed=0)
    message = str(info.value)
    assert ascii(nfc) in message and ascii(nfd) in message and "NFC" in message


def test_normal_forms_in_a_csv_are_refused_before_slicing(tmp_path) -> None:
    path = tmp_path / "data.csv"
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    lines = [f"{skill},q{k},a" for k in range(6) for skill in (nfc, nfd)]
    path.write_text("skill,prompt,answer\n" + "\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "slices"
    source = {"kind": "table", "table": _table_cfg(path)}
    with pytest.raises(SkillmixInputError, match="normal forms"):
        make_slices(source, {"val": 1, "test": 1, "seed": 0}, out)
    assert not out.exists()


# --------------------------------------------------------------------------- temporary folders


def test_slicing_removes_the_temporary_folder_of_a_killed_run(tmp_path) -> None:
    data = _data([("s", f"q{k}", "a") for k in range(12)])
    splits = split_by_skill(data, 2, 2, seed=0)
    out = tmp_path / "results" / "slices"
    stale = tmp_path / "results" / ".slices.tmp-99999999"  # as a SIGKILLed slice job leaves it
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "s.parquet").write_bytes(b"half")
    write_slices(splits, data.skills, out)
    assert not stale.exists()
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["slices"]
