"""Tests of the graph folder: writing it (with its heatmap) and reading it back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_given import GIVEN
from test_graph import SKILLS, SLUGS, curves_for

from skillmix.graph.heatmap import plot_heatmap
from skillmix.graph.learned import assemble
from skillmix.graph.options import GraphOptions
from skillmix.graph.store import read_graph
from skillmix.graph.writing import write_graph
from skillmix.infra.errors import SkillmixInputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_write_read_graph_round_trip(tmp_path: Path) -> None:
    options = GraphOptions(measure="window", binary_edge_weight=0.5, diagonal=1)
    A, raw = assemble("brute_force", SKILLS, SLUGS, curves_for("brute_force"), options)
    out = tmp_path / "graph"
    write_graph(out, A, SKILLS, SKILLS, raw, "brute_force", options.to_dict(), extra={"steps": 12})
    assert sorted(p.name for p in out.iterdir()) == [
        "adjacency.npy", "graph.json", "heatmap.png", "raw.parquet", "skills.json"
    ]  # fmt: skip
    B, rows, columns = read_graph(out)
    np.testing.assert_array_equal(B, A)
    assert B.dtype == np.float64 and rows == columns == SKILLS
    np.testing.assert_array_equal(np.load(out / "adjacency.npy"), A)
    assert json.loads((out / "skills.json").read_text()) == {"rows": SKILLS, "columns": SKILLS}
    meta = json.loads((out / "graph.json").read_text())
    assert meta == {
        "method": "brute_force",
        "options": options.to_dict(),
        "shape": [3, 3],
        "extra": {"steps": 12},
    }
    pd.testing.assert_frame_equal(pd.read_parquet(out / "raw.parquet"), raw)
    assert (out / "heatmap.png").read_bytes()[:8] == PNG_SIGNATURE


def test_write_read_given_non_square(tmp_path: Path) -> None:
    A = GIVEN[:, :2]
    write_graph(tmp_path, A, SKILLS, SKILLS[:2], None, "given", None)
    B, rows, columns = read_graph(tmp_path)
    np.testing.assert_array_equal(B, A)
    assert rows == SKILLS and columns == SKILLS[:2]
    meta = json.loads((tmp_path / "graph.json").read_text())
    assert meta["options"] is None and meta["shape"] == [3, 2] and meta["method"] == "given"
    assert list(pd.read_parquet(tmp_path / "raw.parquet").columns) == ["unit", "step", "skill", "loss"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_write_and_read_graph_errors(tmp_path: Path) -> None:
    with pytest.raises(SkillmixInputError, match="does not match"):
        write_graph(tmp_path / "x", GIVEN, SKILLS[:2], SKILLS, None, "given", None)
    with pytest.raises(SkillmixInputError, match="adjacency.npy not found"):
        read_graph(tmp_path / "missing")


def test_reading_a_graph_imports_no_matplotlib() -> None:
    """A job that only reads a graph (the Skill-It training job) does not import matplotlib."""
    code = "import sys, skillmix.graph.store; print(sorted(m for m in sys.modules if 'matplotlib' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_plot_heatmap_large_and_constant(tmp_path: Path) -> None:
    big = np.random.default_rng(0).normal(size=(25, 25))  # no annotations above 20
    names = [f"s{i}" for i in range(25)]
    plot_heatmap(big, names, names, tmp_path / "big.png", "big")
    plot_heatmap(np.zeros((2, 1)), ["x", "y"], ["x"], tmp_path / "zero.png", "zeros")
    for name in ("big.png", "zero.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
