"""The data mixers in the workflow on the tiny config: Aioli and ODM inside the train job, DoReMi's
proxy and RegMix's proxy runs and fit as DAG jobs of their own, the comparison's cost table and
mixtures, and bad mixer settings stopped before any job (slow: real Snakemake runs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import MAIN_CONFIG, TINY_CONFIG, job_stats, run_ok, snakemake, write_yaml

pytestmark = pytest.mark.slow

RUNS = ["random", "stratified", "aioli", "doremi", "odm", "regmix"]


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("mix_run")
    override = write_yaml(workdir / "mix.yaml", {"train": {"strategies": RUNS}})
    run_ok(workdir, configs=(MAIN_CONFIG, TINY_CONFIG, override))
    # one proxy job per RegMix run (a cluster runs them at once), DoReMi's proxy once, no graph
    assert sorted(p.name for p in (workdir / "results/regmix/runs").glob("*.parquet")) == [
        f"{n}.parquet" for n in range(5)
    ]
    assert (workdir / "results/doremi/weights.json").is_file()
    assert not (workdir / "results/graph").exists()
    assert sorted(p.name for p in (workdir / "results/train").iterdir()) == sorted(RUNS)
    return workdir


def _weights_of(run_dir: Path, run: str) -> pd.Series:
    mixture = pd.read_parquet(run_dir / "results/train" / run / "mixture.parquet")
    return mixture[mixture["step"] == mixture["step"].max()].set_index("skill")["weight"]


def test_doremi_and_regmix_train_on_the_mixture_their_stage_wrote(mix_run: Path) -> None:
    doremi = json.loads((mix_run / "results/doremi/weights.json").read_text())["weights"]
    regmix = json.loads((mix_run / "results/regmix/mixture.json").read_text())["weights"]
    for run, weights in (("doremi", doremi), ("regmix", regmix)):
        assert sum(weights.values()) == pytest.approx(1.0)
        used = _weights_of(mix_run, run)
        for skill, weight in weights.items():
            assert used[skill] == pytest.approx(weight / sum(weights.values()))
    trajectory = pd.read_parquet(mix_run / "results/doremi/trajectory.parquet")
    assert set(trajectory["step"]) == set(range(1, 13))  # the proxy trains as long as the main run
    fit = pd.read_parquet(mix_run / "results/regmix/fit.parquet")
    assert len(fit) == 5 and np.isfinite(fit["predicted"]).all()


def test_online_mixers_change_the_mixture_within_the_run(mix_run: Path) -> None:
    aioli = pd.read_parquet(mix_run / "results/train/aioli/mixture.parquet")
    odm = pd.read_parquet(mix_run / "results/train/odm/mixture.parquet")
    # Aioli: per round, 3 one-step parameter-learning segments then the learned mixture
    assert aioli["step"].nunique() > 2
    assert odm["step"].nunique() == 12  # ODM: a mixture every step


def test_every_strategy_has_the_same_budget_and_its_cost_is_reported(mix_run: Path) -> None:
    costs = pd.read_parquet(mix_run / "results/eval/costs.parquet").set_index("run")
    assert list(costs.index) == RUNS
    assert (costs["steps"] == 12).all()
    counts = {
        run: pd.read_parquet(mix_run / "results/train" / run / "skill_counts.parquet")["count"].sum()
        for run in RUNS
    }
    assert set(counts.values()) == {12 * 8}  # the same examples for every strategy
    assert costs.loc["doremi", "extra_runs"] == 2 and costs.loc["regmix", "extra_runs"] == 5
    assert costs.loc["regmix", "extra_steps"] == 5 * 3
    assert costs.loc["aioli", "extra_evaluations"] > 0 and costs.loc["random", "extra_runs"] == 0
    assert costs.loc["doremi", "stage_wall_seconds"] > 0 and costs.loc["regmix", "stage_wall_seconds"] > 0
    weights = pd.read_parquet(mix_run / "results/eval/weights.parquet")
    assert set(weights["run"]) == set(RUNS)
    assert (mix_run / "results/eval/weights.png").stat().st_size > 0


def test_regmix_fits_a_table_of_proxy_runs_made_elsewhere(mix_run: Path, tmp_path: Path) -> None:
    """`regmix.proxy_runs`: the fit reads a table instead of running proxies (the same code)."""
    mixtures = pd.read_parquet(mix_run / "results/regmix/mixtures.parquet")
    table = mixtures.pivot_table(index="run", columns="skill", values="weight")
    table.columns = [f"weight:{c}" for c in table.columns]
    rng = np.random.default_rng(0)
    for skill in ["lego-1", "lego-2", "lego-3"]:
        table[f"loss:{skill}"] = 3.0 - table[f"weight:{skill}"] + rng.normal(0, 0.01, len(table))
    table.reset_index().to_csv(tmp_path / "runs.csv", index=False)
    override = write_yaml(
        tmp_path / "table.yaml",
        {"train": {"strategies": ["regmix"]}, "regmix": {"proxy_runs": str(tmp_path / "runs.csv"),
                                                         "regressor": "linear"}},
    )  # fmt: skip
    result = run_ok(tmp_path, "results/regmix/mixture.json", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    assert "regmix_proxy" not in job_stats(result.output)
    mixture = json.loads((tmp_path / "results/regmix/mixture.json").read_text())
    assert set(mixture["weights"]) == {"lego-1", "lego-2", "lego-3"}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"train": {"strategies": ["random", "magic"]}}, "config train.strategies.1: 'magic' is not one of"),
        ({"aioli": {"one_hot_factor": 1.5}}, "config aioli.one_hot_factor: 1.5 is greater than the maximum"),
        ({"odm": {"alpha": 1.0}}, "config odm.alpha: 1.0 is greater than or equal to the maximum"),
        ({"doremi": {"reference": "skillit"}}, "config doremi.reference: 'skillit' is not one of"),
        ({"regmix": {"runs": 1}}, "config regmix.runs: 1 is less than the minimum of 2"),
    ],
    ids=["unknown-strategy", "aioli-f", "odm-alpha", "doremi-reference", "regmix-runs"],
)
def test_bad_mixer_settings_stop_before_any_job(tmp_path: Path, override: dict, expected: str) -> None:
    path = write_yaml(tmp_path / "bad.yaml", override)
    result = snakemake(tmp_path, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, path))
    assert result.returncode != 0 and expected in result.output, result.describe()
    assert not (tmp_path / "results").exists()
