"""Tests of the example sources: the data model, LEGO, XOR skills, Addition and load_source (tables:
test_tables.py; Natural-Instructions: test_natural_instructions.py)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from skillmix.data.sources import COLUMNS, SourceData, load_source
from skillmix.data.sources.addition import generate_addition, spaced_digits
from skillmix.data.sources.lego import generate_lego, resolve_lego
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
