"""Tests of given skills graphs: a published .npy matrix and its skill order, checked and reordered
to the data's skills (bad files: test_given_bad.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from skillmix.graph.given import load_given
from skillmix.infra.errors import SkillmixInputError

SHARED_DATA = Path(
    os.environ.get("SKILLMIX_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
NI_METADATA = SHARED_DATA / "skillit_ni_metadata"

# Three skills with awkward names; A, B, C below are these skills in this order.
SKILLS = ["skill A", "b/c", "ü"]
A_, B_, C_ = SKILLS
GIVEN = np.array([[0.0, 1.0, -0.25], [0.5, 0.0, 2.0], [-1.5, 0.125, 0.0]])  # rows/columns SKILLS


@pytest.fixture
def given_files(tmp_path: Path) -> dict[str, Path]:
    np.save(tmp_path / "g.npy", GIVEN)
    (tmp_path / "g.txt").write_text("\n".join(SKILLS) + "\n\n", encoding="utf-8")
    (tmp_path / "g.json").write_text(json.dumps(SKILLS), encoding="utf-8")
    # non-square 3 x 2: columns are the targets "ü" and "skill A"
    np.save(tmp_path / "ns.npy", GIVEN[:, [2, 0]])
    (tmp_path / "ns.json").write_text(json.dumps({"rows": SKILLS, "columns": [C_, A_]}), encoding="utf-8")
    return {p.stem + p.suffix: p for p in tmp_path.iterdir()}


@pytest.mark.parametrize("names", ["g.txt", "g.json"])
def test_load_given_reorders_to_data_order(given_files: dict[str, Path], names: str) -> None:
    data = [C_, A_, B_]
    A, rows, columns = load_given(given_files["g.npy"], given_files[names], data)
    assert rows == columns == data
    order = [2, 0, 1]
    for i, r in enumerate(order):
        for j, col in enumerate(order):
            assert A[i, j] == GIVEN[r, col]  # exact: values are never altered
    assert A.dtype == np.float64


def test_load_given_explicit_rows(given_files: dict[str, Path]) -> None:
    A, rows, columns = load_given(given_files["g.npy"], None, SKILLS, rows=SKILLS)
    assert rows == columns == SKILLS
    np.testing.assert_array_equal(A, GIVEN)
    A, rows, columns = load_given(given_files["ns.npy"], None, [B_, A_, C_], rows=SKILLS, columns=[C_, A_])
    assert rows == [B_, A_, C_] and columns == [A_, C_]
    np.testing.assert_array_equal(A, GIVEN[np.ix_([1, 0, 2], [0, 2])])


def test_load_given_non_square(given_files: dict[str, Path]) -> None:
    data = [B_, C_, A_]
    A, rows, columns = load_given(given_files["ns.npy"], given_files["ns.json"], data)
    assert rows == data
    assert columns == [C_, A_]  # graph columns that are data skills, in data order
    np.testing.assert_array_equal(A, GIVEN[np.ix_([1, 2, 0], [2, 0])])


def test_load_given_superset_is_restricted(tmp_path: Path) -> None:
    big = np.arange(16, dtype=float).reshape(4, 4) / 8 - 1
    names = ["zeta", *SKILLS]
    np.save(tmp_path / "big.npy", big)
    (tmp_path / "big.txt").write_text("\n".join(names), encoding="utf-8")
    A, rows, columns = load_given(tmp_path / "big.npy", tmp_path / "big.txt", [B_, A_])
    assert rows == columns == [B_, A_]
    np.testing.assert_array_equal(A, big[np.ix_([2, 1], [2, 1])])


def test_load_given_keeps_float32_values_and_ones(tmp_path: Path) -> None:
    m = np.array([[1.0, 1.0], [0.1, 1.0]], dtype=np.float32)  # off-diagonal 1 is NOT turned into 0.5
    np.save(tmp_path / "m.npy", m)
    A, _, _ = load_given(tmp_path / "m.npy", None, ["x", "y"], rows=["x", "y"])
    assert A.dtype == np.float64
    np.testing.assert_array_equal(A, m.astype(np.float64))
    assert A[0, 1] == 1.0


def test_load_given_errors(given_files: dict[str, Path], tmp_path: Path) -> None:
    npy, txt = given_files["g.npy"], given_files["g.txt"]
    with pytest.raises(SkillmixInputError, match=r"data skill\(s\) 'new'.*graph skills not in the data: 'ü'"):
        load_given(npy, txt, [A_, B_, "new"])
    with pytest.raises(SkillmixInputError, match="not found"):
        load_given(tmp_path / "absent.npy", txt, SKILLS)
    with pytest.raises(SkillmixInputError, match="not found"):
        load_given(npy, tmp_path / "absent.txt", SKILLS)
    (tmp_path / "two.txt").write_text(f"{A_}\n{B_}\n", encoding="utf-8")
    with pytest.raises(SkillmixInputError, match=r"shape \(3, 3\) does not match"):
        load_given(npy, tmp_path / "two.txt", [A_, B_])
    with pytest.raises(SkillmixInputError, match="does not match"):
        load_given(given_files["ns.npy"], txt, SKILLS)  # 3 x 2 with one 3-name list
    bad = GIVEN.copy()
    bad[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(SkillmixInputError, match=r"non-finite.*row 1, column 2"):
        load_given(tmp_path / "nan.npy", txt, SKILLS)
    np.save(tmp_path / "flat.npy", np.zeros(3))
    with pytest.raises(SkillmixInputError, match="2-D"):
        load_given(tmp_path / "flat.npy", txt, SKILLS)
    (tmp_path / "junk.npy").write_text("not numpy")
    with pytest.raises(SkillmixInputError, match="junk.npy"):
        load_given(tmp_path / "junk.npy", txt, SKILLS)
    (tmp_path / "dup.txt").write_text(f"{A_}\n{A_}\n{C_}\n", encoding="utf-8")
    with pytest.raises(SkillmixInputError, match="more than once"):
        load_given(npy, tmp_path / "dup.txt", [A_, C_])
    (tmp_path / "bad.json").write_text(json.dumps({"names": SKILLS}), encoding="utf-8")
    with pytest.raises(SkillmixInputError, match="bad.json"):
        load_given(npy, tmp_path / "bad.json", SKILLS)
    (tmp_path / "g.csv").write_text(",".join(SKILLS))
    with pytest.raises(SkillmixInputError, match=r"\.txt or \.json"):
        load_given(npy, tmp_path / "g.csv", SKILLS)
    with pytest.raises(SkillmixInputError, match="skill order is needed"):
        load_given(npy, None, SKILLS)
    with pytest.raises(SkillmixInputError, match="not both"):
        load_given(npy, txt, SKILLS, rows=SKILLS)
    (tmp_path / "cols.json").write_text(json.dumps({"rows": SKILLS, "columns": ["x", "y", "z"]}))
    with pytest.raises(SkillmixInputError, match="at least one data skill among its rows"):
        load_given(npy, tmp_path / "cols.json", SKILLS)


def test_load_given_out_of_domain_graph(tmp_path) -> None:
    """Training skills as rows, evaluation skills as columns only (like Skill-It's 59 × 12 NI graph)."""
    matrix = np.array([[0.5, -0.25], [0.0, 1.5]])
    npy = tmp_path / "ood.npy"
    np.save(npy, matrix)
    (tmp_path / "ood.json").write_text(json.dumps({"rows": ["t1", "t2"], "columns": ["e1", "e2"]}))
    A, rows, columns = load_given(npy, tmp_path / "ood.json", ["e2", "t2", "e1", "t1"])
    assert rows == ["t2", "t1"] and columns == ["e2", "e1"]
    np.testing.assert_array_equal(A, [[1.5, 0.0], [-0.25, 0.5]])
    with pytest.raises(SkillmixInputError, match="rows or columns"):
        load_given(npy, tmp_path / "ood.json", ["t1", "e1", "zz"])


def test_load_given_published_ni_graph() -> None:
    npy = NI_METADATA / "top_23_early_decreases.npy"
    txt = NI_METADATA / "top_23.txt"
    if not (npy.is_file() and txt.is_file()):
        pytest.skip(f"published Skill-It NI graph not found at {NI_METADATA} (set SKILLMIX_SHARED_DATA)")
    original = np.load(npy)
    names = [line.strip() for line in txt.read_text().splitlines() if line.strip()]
    assert original.shape == (23, 23) and len(names) == 23
    perm = np.random.default_rng(0).permutation(23)
    data = [names[i] for i in perm]
    A, rows, columns = load_given(npy, txt, data)
    assert rows == columns == data
    np.testing.assert_array_equal(A, original[np.ix_(perm, perm)])
    assert A.min() == original.min() == pytest.approx(-1.772)
    assert A.max() == original.max() == pytest.approx(0.915)
    np.testing.assert_array_equal(np.diag(A), np.zeros(23))  # diagonal stays 0, not set to 1
