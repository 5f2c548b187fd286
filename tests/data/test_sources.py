"""Tests of the example sources: LEGO, Addition, tables and Natural-Instructions."""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from skillmix.data.sources import COLUMNS, SourceData, load_source
from skillmix.data.sources.addition import generate_addition, spaced_digits
from skillmix.data.sources.lego import generate_lego, resolve_lego
from skillmix.data.sources.natural_instructions import load_natural_instructions
from skillmix.data.sources.tables import load_table
from skillmix.infra.errors import SkillmixInputError

SHARED_DATA = Path(
    os.environ.get("SKILLMIX_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
NI_SUBSET = SHARED_DATA / "ni_task_subset"

CLAUSE = r" ?[a-z] = (?:val|not) (?:[a-z]|[01])"
LEGO_PROMPT = re.compile(rf"Input: {CLAUSE}(?: , {CLAUSE})*\. Output: ([a-z]) = val")


def assert_data_model(data: SourceData) -> None:
    """Check the columns, types and text composition every source must satisfy."""
    frame = data.examples
    assert list(frame.columns) == COLUMNS
    assert frame["id"].is_unique
    for column in COLUMNS:
        assert all(isinstance(value, str) for value in frame[column])
    prompt_rows = frame["prompt"] != ""
    composed = frame["prompt"] + " " + frame["answer"]
    assert (frame["text"] == composed)[prompt_rows].all()
    assert (frame.loc[~prompt_rows, "answer"] == "").all()
    assert set(frame["skill"]) == set(data.skills)


# --------------------------------------------------------------------------- LEGO


def lego_clauses(prompt: str) -> list[str]:
    """The clauses of a LEGO prompt, stripped of their spaces."""
    body = prompt[len("Input: ") : prompt.index(". Output:")]
    return [clause.strip() for clause in body.split(",")]


def chain_depth(prompt: str, name: str) -> int:
    """Return the chain position (0 = root) of variable ``name`` in a LEGO prompt."""
    parents = {}
    for clause in lego_clauses(prompt):
        var, _, _, arg = clause.split(" ")
        parents[var] = arg
    depth = 0
    while parents[name] not in ("0", "1"):
        name = parents[name]
        depth += 1
    return depth


def test_lego_format_answers_and_chain() -> None:
    data = generate_lego(n_vars=5, examples_per_skill=200, seed=0)
    assert_data_model(data)
    frame = data.examples
    assert data.skills == ["lego-1", "lego-2", "lego-3", "lego-4", "lego-5"]
    assert data.origin == "lego generator"
    assert frame.groupby("skill").size().to_dict() == {skill: 200 for skill in data.skills}
    for row in frame.itertuples():
        match = LEGO_PROMPT.fullmatch(row.prompt)
        assert match, row.prompt
        assert row.answer in ("0", "1")
        clauses = lego_clauses(row.prompt)
        assert len(clauses) == 5
        names = [clause[0] for clause in clauses]
        assert len(set(names)) == 5
        assert sum(clause[-1] in "01" for clause in clauses) == 1  # exactly one root clause
        name = match.group(1)  # the queried variable is named in the prompt
        assert resolve_lego(row.prompt, name) == int(row.answer) == resolve_lego(row.prompt)
        skill_index = int(row.skill.split("-")[1])
        assert chain_depth(row.prompt, name) == skill_index - 1
        assert re.fullmatch(rf"{row.skill}-\d{{6}}", row.id)
    assert frame.groupby("skill")["text"].apply(lambda texts: texts.is_unique).all()
    assert frame["id"].tolist()[:2] == ["lego-1-000000", "lego-1-000001"]
    # every skill asks for a different chain position, so the prompts differ by skill
    assert frame.groupby("skill")["answer"].apply(lambda a: (a == "1").mean()).between(0.4, 0.6).all()


def test_lego_text_is_the_originals() -> None:
    """The spec's example (chain x -> d -> q -> m -> b, bits 1 1 0 0 1, skill 3), spaces and all."""
    from skillmix.data.sources.lego import _lego_prompt

    prompt = _lego_prompt(list("xdqmb"), [1, 1, 0, 0, 1], [2, 0, 4, 1, 3], 3)
    assert prompt == "Input:  q = not d , x = val 1 ,  b = not m ,  d = val x ,  m = val q. Output: m = val"
    assert resolve_lego(prompt) == 0


def test_lego_exact_example_resolution() -> None:
    prompt = "Input:  k = not n , c = val 0 ,  n = val c. Output: k = val"
    assert LEGO_PROMPT.fullmatch(prompt)
    assert resolve_lego(prompt) == 1
    assert resolve_lego(prompt, "c") == 0
    assert resolve_lego(prompt, "n") == 0
    with pytest.raises(SkillmixInputError, match="'z' is not defined"):
        resolve_lego(prompt, "z")
    with pytest.raises(SkillmixInputError, match="clause"):
        resolve_lego("Input: k = maybe n. Output: k = val", "k")
    with pytest.raises(SkillmixInputError, match="cyclic"):
        resolve_lego("Input: a = not b , b = val a. Output: a = val")
    with pytest.raises(SkillmixInputError, match="expected 'Input"):
        resolve_lego("Input: a = val 1. Output:")


def test_lego_determinism_and_speed() -> None:
    start = time.perf_counter()
    first = generate_lego(5, 700, seed=3)
    assert time.perf_counter() - start < 1.0
    pd.testing.assert_frame_equal(first.examples, generate_lego(5, 700, seed=3).examples)
    other = generate_lego(5, 700, seed=4).examples
    assert (first.examples["text"] != other["text"]).mean() > 0.9


def test_lego_small_chain_exhausts_distinct_examples() -> None:
    data = generate_lego(n_vars=1, examples_per_skill=52, seed=0)  # 26 names x 2 bits
    assert data.examples["text"].is_unique
    with pytest.raises(SkillmixInputError, match="examples_per_skill: 53 exceeds the 52"):
        generate_lego(n_vars=1, examples_per_skill=53, seed=0)
    with pytest.raises(SkillmixInputError, match="source.lego.n_vars"):
        generate_lego(n_vars=27, examples_per_skill=5, seed=0)


# --------------------------------------------------------------------------- XOR skills


def test_xor_generator_against_its_ground_truth() -> None:
    from skillmix.data.sources.xor import generate_xor, xor_answer, xor_bit_maps, xor_ground_truth

    maps, composites = ["f", "g", "h"], [["f"], ["g", "h"]]
    counts = [50, 50, 50, 400, 300]
    data = generate_xor(16, maps, composites, counts, seed=0)
    assert_data_model(data)
    assert data.skills == ["map-f", "map-g", "map-h", "xor-f", "xor-g-h"]
    frame = data.examples
    assert frame.groupby("skill").size().to_dict() == dict(zip(data.skills, counts, strict=True))
    bit_maps = xor_bit_maps(maps, 16, 0)
    for name, bits in bit_maps.items():
        assert sorted(bits.tolist()) == [0] * 8 + [1] * 8, name  # balanced
    for row in frame.itertuples():
        words = row.prompt.split()
        assert words[-1] == "="
        is_map = row.skill.startswith("map-")
        symbols = words[:-1] if is_map else words[:-3]
        assert [w.rstrip("0123456789") for w in symbols] == row.skill.split("-")[1:]
        expected = 0 if is_map else int(words[-2])
        if not is_map:
            assert words[-3] == "^"
        for symbol in symbols:
            expected ^= int(bit_maps[symbol[0]][int(symbol[1:])])
        assert row.answer == str(expected) == str(xor_answer(row.prompt, bit_maps))
    # a composite's answer carries no first-order information about its map's bit
    xor = frame[frame["skill"] == "xor-f"]
    f_bits = [str(bit_maps["f"][int(p.split()[0][1:])]) for p in xor["prompt"]]
    assert 0.4 < (pd.Series(f_bits, index=xor.index) == xor["answer"]).mean() < 0.6
    assert xor_ground_truth(maps, composites).tolist() == [
        [1, 0, 0, 1, 0],
        [0, 1, 0, 0, 1],
        [0, 0, 1, 0, 1],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    pd.testing.assert_frame_equal(frame, generate_xor(16, maps, composites, counts, 0).examples)
    assert xor_bit_maps(maps, 16, 1)["f"].tolist() != bit_maps["f"].tolist()
    with pytest.raises(SkillmixInputError, match="no symbol of the maps"):
        xor_answer("k3 =", bit_maps)
    with pytest.raises(SkillmixInputError, match="written bit"):
        xor_answer("f3 ^ 2 =", bit_maps)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((16, [], [], 5), r"source\.xor\.maps"),
        ((16, ["f", "f"], [], 5), r"distinct"),
        ((16, ["f", "G"], [], 5), r"lower-case"),
        ((16, ["f", "g"], [[]], 5), r">= 1 distinct maps"),
        ((16, ["f", "g"], [["f", "f"]], 5), r">= 1 distinct maps"),
        ((16, ["f", "g"], [["f", "k"]], 5), r"not in source\.xor\.maps"),
        ((15, ["f", "g"], [["f", "g"]], 5), r"n_symbols.*even"),
        ((16, ["f", "g"], [["f", "g"]], [5, 5]), r"3 counts"),
    ],
)
def test_xor_bad_config(args: tuple, message: str) -> None:
    from skillmix.data.sources.xor import generate_xor

    with pytest.raises(SkillmixInputError, match=message):
        generate_xor(*args, seed=0)


# --------------------------------------------------------------------------- Addition

ADDITION_PROMPT = re.compile(r"Input: A = (\d(?: \d)*) \+ (\d(?: \d)*) , A (\d+) = \? Output:")


def test_addition_format_and_digits() -> None:
    assert spaced_digits(106, 3) == "1 0 6"
    assert spaced_digits(71, 3) == "0 7 1"
    data = generate_addition(n_digits=3, examples_per_skill=300, seed=0)
    assert_data_model(data)
    assert data.skills == ["digit-0", "digit-1", "digit-2"]
    frame = data.examples
    assert frame.groupby("skill").size().to_dict() == {skill: 300 for skill in data.skills}
    padded = 0
    for row in frame.itertuples():
        match = ADDITION_PROMPT.fullmatch(row.prompt)
        assert match, row.prompt
        first, second, digit = match.group(1), match.group(2), int(match.group(3))
        assert len(first) == len(second) == 5  # three digits, space-separated
        padded += first.startswith("0") or second.startswith("0")
        assert row.skill == f"digit-{digit}"
        total = int(first.replace(" ", "")) + int(second.replace(" ", ""))
        assert row.answer == str(total // 10**digit % 10)
        assert row.text == f"{row.prompt} {row.answer}"
        assert "  " not in row.text
        assert re.fullmatch(rf"{row.skill}-\d{{6}}", row.id)
    assert padded > 0
    assert frame.groupby("skill")["text"].apply(lambda texts: texts.is_unique).all()


def test_addition_spec_example_text() -> None:
    data = generate_addition(n_digits=1, examples_per_skill=100, seed=0)  # every operand pair
    texts = set(data.examples["text"])
    assert "Input: A = 9 + 8 , A 0 = ? Output: 7" in texts
    assert "Input: A = 0 + 0 , A 0 = ? Output: 0" in texts
    with pytest.raises(SkillmixInputError, match="101 exceeds the 100"):
        generate_addition(n_digits=1, examples_per_skill=101, seed=0)


def test_addition_determinism_and_speed() -> None:
    start = time.perf_counter()
    first = generate_addition(5, 700, seed=0)
    assert time.perf_counter() - start < 1.0
    pd.testing.assert_frame_equal(first.examples, generate_addition(5, 700, seed=0).examples)
    other = generate_addition(5, 700, seed=1).examples
    assert (first.examples["text"] != other["text"]).mean() > 0.9


# --------------------------------------------------------------------------- load_source


def test_load_source_dispatches_synthetics() -> None:
    xor = load_source({"kind": "xor", "xor": {"examples_per_skill": 4}})
    assert xor.skills == ["map-f", "map-g", "map-h", "xor-f", "xor-g"]
    assert len(xor.examples) == 20
    lego = load_source({"kind": "lego", "seed": 2, "lego": {"n_vars": 3, "examples_per_skill": 10}})
    pd.testing.assert_frame_equal(lego.examples, generate_lego(3, 10, 2).examples)
    addition = load_source({"kind": "addition", "addition": {"n_digits": 2}})
    assert addition.skills == ["digit-0", "digit-1"]
    assert len(addition.examples) == 2 * 700


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"kind": "images"}, r"source\.kind.*'images'"),
        ({"kind": "lego", "colour": 1}, r"source.*unknown key.*colour"),
        ({"kind": "lego", "lego": {"n_var": 3}}, r"source\.lego.*unknown key.*n_var"),
        ({"kind": "lego", "seed": -1}, r"source\.seed"),
        ({"kind": "addition", "addition": {"n_digits": "3"}}, r"source\.addition\.n_digits"),
        ({"kind": "table", "table": {"path": None}}, r"source\.table\.path"),
    ],
)
def test_load_source_rejects_bad_config(cfg: dict, message: str) -> None:
    with pytest.raises(SkillmixInputError, match=message):
        load_source(cfg)


# --------------------------------------------------------------------------- tables

ROWS = [
    {"uid": "a1", "category": "math", "question": "1+1?", "solution": "2", "body": "one"},
    {
        "uid": "a2",
        "category": "geo",
        "question": "Capital of France?",
        "solution": "Paris",
        "body": "two",
    },
    {"uid": "a3", "category": "math", "question": "2*3?", "solution": 6, "body": "three"},
]
QA = {"skill_column": "category", "prompt_column": "question", "answer_column": "solution"}


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` to ``path`` in the format its suffix names."""
    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        frame.astype(str).to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.astype({"solution": str}).to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_table_prompt_answer_files(tmp_path: Path, suffix: str) -> None:
    write_rows(tmp_path / f"data{suffix}", ROWS)
    data = load_table({"path": f"data{suffix}", **QA}, base_dir=tmp_path)
    assert_data_model(data)
    assert data.skills == ["geo", "math"]
    assert data.origin == str(tmp_path / f"data{suffix}")
    assert data.examples.to_dict("records")[2] == {
        "id": "row-000002",
        "skill": "math",
        "prompt": "2*3?",
        "answer": "6",
        "text": "2*3? 6",
        "messages": "",
    }


def test_table_text_column_and_id_column(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "data.jsonl", ROWS)
    data = load_table(
        {"path": str(path), "skill_column": "category", "text_column": "body", "id_column": "uid"}
    )
    assert_data_model(data)
    assert data.examples["id"].tolist() == ["a1", "a2", "a3"]
    assert data.examples["text"].tolist() == ["one", "two", "three"]
    assert (data.examples["prompt"] == "").all() and (data.examples["answer"] == "").all()


def test_table_hf_disk_and_hf_builder(tmp_path: Path) -> None:
    import datasets

    frame = pd.DataFrame(ROWS).astype({"solution": str})
    dataset = datasets.Dataset.from_pandas(frame, preserve_index=False)
    dataset.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(str(tmp_path / "dict"))
    expected = load_table({"path": str(write_rows(tmp_path / "d.jsonl", ROWS)), **QA}).examples

    single = load_table({"path": "single", **QA}, base_dir=tmp_path)
    pd.testing.assert_frame_equal(single.examples, expected)
    split = load_table({"path": "dict", "format": "hf_disk", "hf_split": "test", **QA}, tmp_path)
    assert split.examples["prompt"].tolist() == ["1+1?"]
    with pytest.raises(SkillmixInputError, match=r"split 'validation'.*available splits.*test"):
        load_table({"path": "dict", "hf_split": "validation", **QA}, tmp_path)

    built = load_table({"format": "hf", "hf_name": "json", "data_files": "d.jsonl", **QA}, tmp_path)
    pd.testing.assert_frame_equal(built.examples, expected)
    with pytest.raises(SkillmixInputError, match="never downloads"):
        load_table({"format": "hf", "hf_name": "someone/remote_set", **QA}, tmp_path)
    with pytest.raises(SkillmixInputError, match=r"data_files.*missing\.jsonl"):
        load_table({"format": "hf", "hf_name": "json", "data_files": "missing.jsonl", **QA}, tmp_path)


def bad_rows(**changes: object) -> list[dict]:
    """Return a copy of ROWS whose second row has ``changes`` applied (None deletes a key)."""
    rows = [dict(row) for row in ROWS]
    for key, value in changes.items():
        rows[1][key] = value
    return rows


@pytest.mark.parametrize(
    ("rows", "cfg", "message"),
    [
        (ROWS, {**QA, "skill_column": "topic"}, r"column 'topic'.*available columns.*category"),
        (ROWS, {**QA, "answer_column": "sol"}, r"column 'sol'.*answer_column"),
        (ROWS, {"skill_column": "category", "prompt_column": "question"}, "either text_column"),
        (ROWS, {**QA, "text_column": "body"}, "both text_column and prompt_column"),
        (ROWS, {**QA, "id_column": "nope"}, r"column 'nope'.*id_column"),
        (bad_rows(category=None), QA, r"row row-000001 has an empty or null skill"),
        (bad_rows(category=""), QA, r"row row-000001 has an empty or null skill"),
        (bad_rows(solution=None), QA, r"row row-000001 \(skill 'geo'\).*null answer"),
        (bad_rows(solution=" "), QA, r"row row-000001 \(skill 'geo'\).*answer"),
        (bad_rows(question=""), QA, r"row row-000001 \(skill 'geo'\).*prompt"),
        (
            bad_rows(body=""),
            {"skill_column": "category", "text_column": "body"},
            r"row row-000001 \(skill 'geo'\).*empty or null text",
        ),
        (bad_rows(uid="a1"), {**QA, "id_column": "uid"}, r"duplicated id.*'a1'"),
    ],
)
def test_table_bad_input(tmp_path: Path, rows: list[dict], cfg: dict, message: str) -> None:
    path = write_rows(tmp_path / "data.jsonl", rows)
    with pytest.raises(SkillmixInputError, match=message) as info:
        load_table({"path": str(path), **cfg})
    assert str(path) in str(info.value)


def test_table_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SkillmixInputError, match=r"source\.table\.path.*nothere\.jsonl"):
        load_table({"path": "nothere.jsonl", **QA}, tmp_path)
    write_rows(tmp_path / "data.jsonl", ROWS)
    with pytest.raises(SkillmixInputError, match=r"source\.table\.format.*'xlsx'"):
        load_table({"path": "data.jsonl", "format": "xlsx", **QA}, tmp_path)
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(SkillmixInputError, match=r"data\.txt: cannot tell the format"):
        load_table({"path": "data.txt", **QA}, tmp_path)
    (tmp_path / "broken.jsonl").write_text('{"category": "a"}\n{oops\n')
    with pytest.raises(SkillmixInputError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        load_table({"path": "broken.jsonl", **QA}, tmp_path)
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(SkillmixInputError, match=r"broken\.parquet: not a readable Parquet"):
        load_table({"path": "broken.parquet", **QA}, tmp_path)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(SkillmixInputError, match=r"empty_dir: not a datasets save_to_disk"):
        load_table({"path": "empty_dir", **QA}, tmp_path)


def test_table_via_load_source(tmp_path: Path) -> None:
    write_rows(tmp_path / "data.csv", ROWS)
    data = load_source({"kind": "table", "table": {"path": "data.csv", **QA}}, base_dir=tmp_path)
    assert data.examples["answer"].tolist() == ["2", "Paris", "6"]


# --------------------------------------------------------------------------- Natural-Instructions


def ni_task(definition: object, n_instances: int, prefix: str) -> dict:
    """Return an NI task dict with two positive examples and ``n_instances`` instances."""
    return {
        "Definition": definition,
        "Positive Examples": [
            {"input": f"{prefix} demo {i}", "output": f"demo answer {i}", "explanation": "."}
            for i in range(2)
        ],
        "Negative Examples": [],
        "Instances": [
            {"input": f"{prefix} question {i}", "output": [f" answer {i} ", "alt"]}
            for i in range(n_instances)
        ],
    }


@pytest.fixture
def ni_dir(tmp_path: Path) -> Path:
    """A tiny NI folder: task_a.json (5 instances), task_b.json.gz (12), task_c.json (3)."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "task_a.json").write_text(json.dumps(ni_task("Answer A.", 5, "a")))
    with gzip.open(tasks / "task_b.json.gz", "wt", encoding="utf-8") as handle:
        json.dump(ni_task(["Answer B.", "Carefully."], 12, "b"), handle)
    (tasks / "task_c.json").write_text(json.dumps(ni_task("Answer C.", 3, "c")))
    pd.DataFrame(
        {
            "task_file": ["task_a.json", "task_b.json.gz", "task_c.json"],
            "ni_category": ["qa", "qa", "classification"],
        }
    ).to_csv(tmp_path / "cats.csv", index=False)
    return tmp_path


def ni_cfg(**changes: object) -> dict:
    """Return an NI config for the ``ni_dir`` fixture (relative paths) with ``changes``."""
    return {"tasks_dir": "tasks", "categories_csv": "cats.csv", "max_per_task": None, **changes}


def test_ni_fixture_prompts(ni_dir: Path) -> None:
    data = load_natural_instructions(ni_cfg(), ni_dir)
    assert_data_model(data)
    assert data.skills == ["classification", "qa"]
    frame = data.examples.set_index("id")
    assert len(frame) == 5 + 12 + 3
    assert frame.loc["task_a-000003", "prompt"] == "Answer A.\n\nInput: a question 3\nOutput:"
    assert frame.loc["task_a-000003", "answer"] == "answer 3"
    assert frame.loc["task_a-000003", "text"] == "Answer A.\n\nInput: a question 3\nOutput: answer 3"
    assert frame.loc["task_b-000011", "prompt"].startswith("Answer B.\nCarefully.\n\nInput: b q")
    assert frame.loc["task_c-000000", "skill"] == "classification"

    demos = load_natural_instructions(ni_cfg(n_demonstrations=2, include_definition=False), ni_dir)
    assert demos.examples.set_index("id").loc["task_c-000001", "prompt"] == (
        "Input: c demo 0\nOutput: demo answer 0\n\n"
        "Input: c demo 1\nOutput: demo answer 1\n\n"
        "Input: c question 1\nOutput:"
    )
    by_task = load_natural_instructions(ni_cfg(skill="task"), ni_dir)
    assert by_task.skills == ["task_a", "task_b", "task_c"]
    assert (by_task.examples["id"].str.rsplit("-", n=1).str[0] == by_task.examples["skill"]).all()


def test_ni_subsampling(ni_dir: Path) -> None:
    first = load_natural_instructions(ni_cfg(max_per_task=4), ni_dir, seed=0).examples
    assert first.groupby("skill").size().to_dict() == {"classification": 3, "qa": 8}
    b_ids = first.loc[first["id"].str.startswith("task_b"), "id"].tolist()
    assert b_ids == sorted(b_ids) and len(b_ids) == 4  # original order kept
    again = load_natural_instructions(ni_cfg(max_per_task=4), ni_dir, seed=0).examples
    pd.testing.assert_frame_equal(first, again)
    subsets = {
        tuple(load_natural_instructions(ni_cfg(max_per_task=4), ni_dir, seed=s).examples["id"])
        for s in range(5)
    }
    assert len(subsets) > 1
    via_source = load_source(
        {"kind": "natural_instructions", "natural_instructions": ni_cfg(max_per_task=4)}, ni_dir
    )
    pd.testing.assert_frame_equal(via_source.examples, first)


def test_ni_bad_input(ni_dir: Path) -> None:
    with pytest.raises(SkillmixInputError, match=r"tasks_dir.*nowhere"):
        load_natural_instructions(ni_cfg(tasks_dir="nowhere"), ni_dir)
    with pytest.raises(SkillmixInputError, match=r"categories_csv.*none\.csv"):
        load_natural_instructions(ni_cfg(categories_csv="none.csv"), ni_dir)
    with pytest.raises(SkillmixInputError, match=r"cats\.csv: column 'category'.*available"):
        load_natural_instructions(ni_cfg(category_column="category"), ni_dir)
    with pytest.raises(SkillmixInputError, match=r"cats\.csv: column 'file'.*file_column"):
        load_natural_instructions(ni_cfg(file_column="file"), ni_dir)
    with pytest.raises(SkillmixInputError, match=r"natural_instructions\.skill: .domain. is not one of"):
        load_natural_instructions(ni_cfg(skill="domain"), ni_dir)
    with pytest.raises(SkillmixInputError, match=r"task_a\.json: has 2 'Positive Examples'"):
        load_natural_instructions(ni_cfg(n_demonstrations=3), ni_dir)

    csv = ni_dir / "cats.csv"
    csv.write_text("task_file,ni_category\ntask_a.json,qa\ntask_z.json,qa\n")
    with pytest.raises(SkillmixInputError, match=r"do not exist.*task_z\.json"):
        load_natural_instructions(ni_cfg(), ni_dir)
    csv.write_text("task_file,ni_category\ntask_a.json,qa\ntask_a.json,qa\n")
    with pytest.raises(SkillmixInputError, match=r"more than once.*task_a\.json"):
        load_natural_instructions(ni_cfg(), ni_dir)
    csv.write_text("task_file,ni_category\ntask_a.json,\n")
    with pytest.raises(SkillmixInputError, match=r"line 2 \(task_a\.json\) has an empty 'ni_category'"):
        load_natural_instructions(ni_cfg(), ni_dir)

    csv.write_text("task_file,ni_category\ntask_a.json,qa\n")
    task = ni_task("Answer A.", 2, "a")
    del task["Instances"]
    (ni_dir / "tasks" / "task_a.json").write_text(json.dumps(task))
    with pytest.raises(SkillmixInputError, match=r"task_a\.json: not valid NI JSON.*'Instances'"):
        load_natural_instructions(ni_cfg(), ni_dir)
    task = ni_task("Answer A.", 2, "a")
    task["Instances"][1] = {"input": "x"}
    (ni_dir / "tasks" / "task_a.json").write_text(json.dumps(task))
    with pytest.raises(SkillmixInputError, match=r"task_a\.json.*'Instances'\[1\].*'output'"):
        load_natural_instructions(ni_cfg(), ni_dir)
    (ni_dir / "tasks" / "task_a.json").write_text("{not json")
    with pytest.raises(SkillmixInputError, match=r"task_a\.json: not a valid NI JSON"):
        load_natural_instructions(ni_cfg(), ni_dir)


@pytest.fixture
def ni_subset() -> Path:
    """The shared 20-task NI subset; skip when the shared data folder is absent."""
    if not (NI_SUBSET / "task_categories.csv").is_file():
        pytest.skip(
            f"shared NI data not found at {NI_SUBSET} (set SKILLMIX_SHARED_DATA to the folder "
            "holding ni_task_subset/)"
        )
    return NI_SUBSET


def test_ni_shared_subset(ni_subset: Path) -> None:
    cfg = {
        "tasks_dir": str(ni_subset / "tasks"),
        "categories_csv": str(ni_subset / "task_categories.csv"),
        "max_per_task": 200,
    }
    data = load_natural_instructions(cfg, seed=0)
    assert_data_model(data)
    assert data.skills == [
        "code_to_text",
        "question_answering",
        "stereotype_detection",
        "text_categorization",
        "text_completion",
        "text_to_code",
        "toxic_language_detection",
        "word_semantics",
    ]
    counts = data.examples.groupby("skill").size().to_dict()
    assert counts == {
        "code_to_text": 600,
        "question_answering": 400,
        "stereotype_detection": 800,
        "text_categorization": 200,
        "text_completion": 800,
        "text_to_code": 600,
        "toxic_language_detection": 200,
        "word_semantics": 400,
    }
    assert data.examples["prompt"].str.endswith("\nOutput:").all()
    assert data.examples["prompt"].str.contains("\n\nInput: ").all()  # definition first
    by_task = load_natural_instructions({**cfg, "skill": "task", "max_per_task": 5})
    assert len(by_task.skills) == 20 and len(by_task.examples) == 100
    assert "task126_scan_structured_text_generation_command_action_all" in by_task.skills


@pytest.mark.parametrize(
    ("kind", "generate"),
    [
        ("lego", lambda counts: generate_lego(5, counts, 0)),
        ("addition", lambda counts: generate_addition(5, counts, 0)),
    ],
)
def test_per_skill_counts(kind, generate) -> None:
    data = generate([4, 4, 4, 12, 20])
    assert data.examples.groupby("skill", sort=False).size().tolist() == [4, 4, 4, 12, 20]
    assert data.examples["id"].is_unique
    with pytest.raises(SkillmixInputError, match=f"source.{kind}.examples_per_skill: expected 5 counts"):
        generate([4, 4])
    with pytest.raises(SkillmixInputError, match=f"source.{kind}.examples_per_skill"):
        generate([4, 4, 0, 4, 4])


CHATS = [
    {
        "topic": "geo",
        "messages": [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris"},
        ],
    },
    {
        "topic": "math",
        "messages": [
            {"role": "system", "content": "Be exact."},
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": "2*3?"},
            {"role": "assistant", "content": "6"},
        ],
    },
]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_table_messages_column(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"chats{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in CHATS))
    else:
        pd.DataFrame(CHATS).to_parquet(path, index=False)
    data = load_table(
        {"path": path.name, "skill_column": "topic", "messages_column": "messages"}, base_dir=tmp_path
    )
    assert_data_model(data)
    row = data.examples.iloc[1]
    assert (row["prompt"], row["answer"], row["text"]) == ("2*3?", "6", "2*3? 6")
    assert json.loads(row["messages"]) == CHATS[1]["messages"]


def test_table_messages_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"topic": "x", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    cfg = {"path": path.name, "skill_column": "topic", "messages_column": "messages"}
    with pytest.raises(
        SkillmixInputError, match=r"chats.jsonl: row row-000000, column 'messages': the last turn"
    ):
        load_table(cfg, base_dir=tmp_path)
    with pytest.raises(SkillmixInputError, match="sets messages_column and prompt_column"):
        load_table({**cfg, "prompt_column": "topic"}, base_dir=tmp_path)


def test_ni_chat_rows(ni_dir: Path) -> None:
    plain = load_natural_instructions(ni_cfg(), ni_dir).examples
    chat = load_natural_instructions(ni_cfg(chat=True), ni_dir).examples
    assert (plain["messages"] == "").all() and plain["id"].tolist() == chat["id"].tolist()
    turns = json.loads(chat["messages"].iloc[0])
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[0]["content"] + "\nOutput:" == plain["prompt"].iloc[0]  # the definition is kept
    assert turns[1]["content"] == plain["answer"].iloc[0] == chat["answer"].iloc[0]


def test_format_json_is_a_format_the_schema_accepts(tmp_path: Path) -> None:
    # a JSON list of objects under a name that does not say so: format json, as README documents
    records = [
        {"category": s, "question": f"q{i}", "solution": f"a{i}"} for s in ("x", "y") for i in range(3)
    ]
    (tmp_path / "data.txt").write_text(json.dumps(records))
    built = load_table({"path": "data.txt", "format": "json", **QA}, tmp_path)
    assert built.skills == ["x", "y"] and len(built.examples) == 6
