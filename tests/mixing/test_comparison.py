"""The comparison's cost table and the strategies' mixtures side by side."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from skillmix.mixing.comparison import COST_COLUMNS, mixture_summary, run_costs


def test_costs_add_the_graph_runs_and_the_stage_jobs(tmp_path) -> None:
    metrics = {
        "random": {"steps": 100, "evaluations": 3, "wall_seconds": 2.0},
        "skillit": {"steps": 100, "evaluations": 3, "wall_seconds": 3.0},
        "doremi": {"steps": 100, "evaluations": 3, "wall_seconds": 2.5, "extra_runs": 2, "extra_steps": 200},
    }
    paths = []
    for run, values in metrics.items():
        paths.append(tmp_path / f"{run}.json")
        paths[-1].write_text(json.dumps(values))
    (tmp_path / "proxy.json").write_text(json.dumps({"wall_seconds": 7.5}))
    graph = {"skillit": {"extra_runs": 15, "extra_steps": 150, "extra_examples": 1200}}
    table = run_costs(list(metrics), paths, {"doremi": [tmp_path / "proxy.json"]}, graph).set_index("run")
    assert list(table.reset_index().columns) == COST_COLUMNS
    assert table.loc["skillit", ["extra_runs", "extra_steps", "extra_examples"]].tolist() == [15, 150, 1200]
    assert table.loc["doremi", "extra_runs"] == 2 and table.loc["doremi", "stage_wall_seconds"] == 7.5
    assert table.loc["random", ["extra_runs", "stage_wall_seconds"]].tolist() == [0, 0.0]


def test_mixture_summary_final_segment_and_realised_shares(tmp_path) -> None:
    mixture = pd.DataFrame(
        {"round": [0, 0, 1, 1], "step": [1, 1, 3, 3], "skill": ["a", "b"] * 2, "weight": [0.5, 0.5, 0.9, 0.1]}
    )
    counts = pd.DataFrame({"step": [1, 1, 2, 2, 3, 3], "skill": ["a", "b"] * 3, "count": [2, 2, 2, 2, 4, 0]})
    mixture.to_parquet(tmp_path / "m.parquet")
    counts.to_parquet(tmp_path / "c.parquet")
    table = mixture_summary(["x"], [tmp_path / "m.parquet"], [tmp_path / "c.parquet"]).set_index("skill")
    assert table.loc["a", "final"] == 0.9 and table.loc["b", "final"] == 0.1
    assert table.loc["a", "average"] == pytest.approx(8 / 12)
    assert table.loc["b", "average"] == pytest.approx(4 / 12)
