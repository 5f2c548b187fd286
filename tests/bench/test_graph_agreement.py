"""Tests of the benchmarks' graph comparison (bench/graph_agreement.py): rank agreement of the
entries, precision and recall of the edges."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from skillmix.infra.errors import SkillmixInputError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from graph_agreement import edge_agreement, graph_agreement  # noqa: E402


def test_graph_agreement_ranks_off_diagonal_entries() -> None:
    a = np.array([[9.0, 1.0, 2.0], [3.0, 9.0, 4.0], [5.0, 6.0, 9.0]])
    assert graph_agreement(a, a * 10 - 1) == pytest.approx(1.0)  # monotone: same ranks
    b = a.copy()
    np.fill_diagonal(b, -100.0)  # the diagonal does not count
    assert graph_agreement(a, b) == pytest.approx(1.0)
    assert graph_agreement(a, -a) == pytest.approx(-1.0)
    with pytest.raises(SkillmixInputError, match="k × k"):
        graph_agreement(a, a[:2])


def test_edge_agreement() -> None:
    known = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert edge_agreement(known * 0.5, known) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    learned = np.array([[1, 0.4, 0.3], [0, 1, 0], [0.01, 0, 1]])
    result = edge_agreement(learned, known, threshold=0.05)
    assert result["precision"] == pytest.approx(0.5)  # x->y right, x->z wrong (0.01 is below)
    assert result["recall"] == pytest.approx(0.5)  # y->z missed
    assert result["f1"] == pytest.approx(0.5)
    assert edge_agreement(np.eye(3), known)["precision"] == 1.0  # nothing predicted
    assert edge_agreement(np.eye(3), known)["recall"] == 0.0
