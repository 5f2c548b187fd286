"""Bad given graphs: files that are not a numeric .npy matrix, and values too large to use."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from skillmix.graph.given import MAX_MAGNITUDE, load_given
from skillmix.infra.errors import SkillmixInputError

SKILLS = ["a", "b"]
EXPECTED = "expected a NumPy .npy file .* square numeric matrix, one row and one column per skill"


def _write_random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(256))


def _write_object(path: Path) -> None:
    np.save(path, np.array([[1, None], [None, 1]], dtype=object), allow_pickle=True)


def _write_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps(np.eye(2)))


def _write_npz(path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, a=np.eye(2))


def _write_truncated(path: Path) -> None:
    np.save(path, np.eye(2))
    path.write_bytes(path.read_bytes()[:-8])


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (_write_random, "not a .npy array file"),
        (_write_pickle, "not a .npy array file"),
        (_write_npz, "not a .npy array file"),
        (_write_object, r"Python objects \(dtype object\)"),
        (_write_truncated, "damaged or truncated"),
        (lambda p: np.save(p, np.zeros(2)), r"1-D array of shape \(2,\)"),
        (lambda p: np.save(p, np.zeros((2, 2, 1))), r"3-D array"),
        (lambda p: np.save(p, np.array([["x", "y"], ["z", "w"]])), "dtype <U1, not real numbers"),
        (lambda p: np.save(p, np.eye(2) + 1j), "dtype complex128, not real numbers"),
        (lambda p: np.save(p, np.zeros(3).reshape(1, 3)), r"shape \(1, 3\) is not square"),
    ],
)
def test_bad_adjacency_file_names_key_file_and_expectation(tmp_path: Path, write, problem: str) -> None:
    path = tmp_path / "graph.npy"
    write(path)
    with pytest.raises(SkillmixInputError) as caught:
        load_given(path, None, SKILLS, rows=SKILLS)
    message = str(caught.value)
    assert message.startswith(f"config graph.given.adjacency: {path}: "), message
    assert re.search(problem, message), message
    assert re.search(EXPECTED, message), message
    assert "allow_pickle" not in message


@pytest.mark.parametrize("value", [1e308, -1e308, 2 * MAX_MAGNITUDE])
def test_huge_values_are_refused_naming_the_magnitude(tmp_path: Path, value: float) -> None:
    path = tmp_path / "huge.npy"
    matrix = np.ones((2, 2))
    matrix[1, 0] = value
    np.save(path, matrix)
    with pytest.raises(SkillmixInputError) as caught:
        load_given(path, None, SKILLS, rows=SKILLS)
    message = str(caught.value)
    assert message.startswith(f"config graph.given.adjacency: {path}: entry at row 1, column 0 is "), message
    assert f"{value:.3g}" in message and "magnitude at most 1e+100" in message, message


def test_large_values_within_the_limit_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "large.npy"
    matrix = np.array([[MAX_MAGNITUDE, -1.0], [0.0, -MAX_MAGNITUDE]])
    np.save(path, matrix)
    A, _, _ = load_given(path, None, SKILLS, rows=SKILLS)
    np.testing.assert_array_equal(A, matrix)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_values_stay_errors(tmp_path: Path, value: float) -> None:
    path = tmp_path / "inf.npy"
    matrix = np.ones((2, 2))
    matrix[0, 1] = value
    np.save(path, matrix)
    with pytest.raises(SkillmixInputError, match=r"graph\.given\.adjacency.*non-finite.*row 0, column 1"):
        load_given(path, None, SKILLS, rows=SKILLS)


def test_huge_values_never_reach_the_heatmap(tmp_path: Path) -> None:
    """The heatmap overflows (vmax - vmin) near the float64 limit, but not at the limit load_given keeps."""
    from skillmix.graph.heatmap import plot_heatmap

    plot_heatmap(np.full((2, 2), MAX_MAGNITUDE), SKILLS, SKILLS, tmp_path / "ok.png", "limit")
    assert (tmp_path / "ok.png").stat().st_size > 0
