"""RDS+ (`rds`) in the workflow beside LESS and random, on the tiny selection config
(tests/configs/tiny_select.yaml with `select.methods: [less, random, rds]`): its hidden-state
jobs and scores, its selection, training and evaluation, the comparison of the three, and the
cost table with RDS+'s stages beside LESS's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import MAIN_CONFIG, REPO, TINY_CONFIG, job_stats, run_ok, snakemake, write_yaml

TINY_SELECT_CONFIG = REPO / "tests" / "configs" / "tiny_select.yaml"
SELECT = yaml.safe_load(TINY_SELECT_CONFIG.read_text())["select"]
METHODS = ["less", "random", "rds"]
N_POOL, N_SELECTED, N_TARGET = 120, 12, SELECT["target"]["examples_per_skill"]
TARGET_SKILL = SELECT["target"]["skills"][0]
TARGETS = [
    "results/select/eval/summary.parquet",
    "results/select/eval/comparison.png",
    "results/select/eval/costs.parquet",
    "results/select/selected/composition.png",
    *[f"results/select/eval/{m}/curves.png" for m in METHODS],
    "results/select/selected/rds.jsonl",
]


def _configs(tmp: Path, **select) -> tuple[Path, ...]:
    override = write_yaml(tmp / "methods.yaml", {"select": {"methods": METHODS, **select}})
    return (MAIN_CONFIG, TINY_CONFIG, TINY_SELECT_CONFIG, override)


def test_rds_plans_its_jobs_beside_less(tmp_path):
    result = run_ok(tmp_path, "-n", *TARGETS, configs=_configs(tmp_path))
    stats = job_stats(result.output)
    assert stats["hidden_states"] == 2 and stats["rds_scores"] == 1, stats
    assert stats["select"] == 3 and stats["train_selected"] == 3 and stats["evaluate_selected"] == 3, stats
    assert stats["select_costs"] == 1 and stats["warmup"] == 1, stats


def test_rds_alone_needs_no_warmup_and_a_scoring_method_is_required(tmp_path):
    override = write_yaml(tmp_path / "rds.yaml", {"select": {"methods": ["rds", "random"]}})
    result = run_ok(tmp_path, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, TINY_SELECT_CONFIG, override))
    stats = job_stats(result.output)
    assert stats["hidden_states"] == 2 and not {"warmup", "grads", "influence"} & set(stats), stats
    bad = write_yaml(tmp_path / "bad.yaml", {"select": {"methods": ["random"]}})
    failed = snakemake(tmp_path, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, TINY_SELECT_CONFIG, bad))
    assert failed.returncode != 0 and "at least one method that scores" in failed.output, failed.describe()
    unknown = write_yaml(tmp_path / "unknown.yaml", {"select": {"methods": ["rds+"]}})
    failed = snakemake(tmp_path, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, TINY_SELECT_CONFIG, unknown))
    assert failed.returncode != 0 and "select.methods" in failed.output, failed.describe()


@pytest.fixture(scope="module")
def rds_run(tmp_path_factory) -> Path:
    """The tiny selection run with the three methods, for real, once."""
    workdir = tmp_path_factory.mktemp("rds_run")
    result = run_ok(workdir, *TARGETS, configs=_configs(workdir))
    stats = job_stats(result.output)
    assert stats["hidden_states"] == 2 and stats["train_selected"] == 3, stats
    return workdir


@pytest.mark.slow
def test_rds_selects_trains_and_is_compared(rds_run):
    root = rds_run / "results/select"
    pool = pd.read_parquet(root / "pool.parquet")
    states = np.load(root / "hidden/candidates/states.npy")
    assert states.shape[0] == N_POOL and np.isfinite(states).all()
    assert len(np.load(root / "hidden/target/states.npy")) == N_TARGET
    info = json.loads((root / "hidden/candidates/info.json").read_text())
    assert info["pooling"] == "weighted_mean" and info["rows"] == N_POOL
    scores = pd.read_parquet(root / "rds/scores.parquet")
    assert list(scores.columns) == ["id", "skill", "score", f"score_{TARGET_SKILL}"]
    assert scores["id"].tolist() == pool["id"].tolist() and scores["score"].between(-1, 1).all()
    rds = pd.read_parquet(root / "selected/rds.parquet")
    assert len(rds) == N_SELECTED and rds["rank"].tolist() == list(range(1, N_SELECTED + 1))
    # one target skill: the top candidates by their highest cosine, ties by id
    expected = scores.sort_values(["score", "id"], ascending=[False, True]).head(N_SELECTED)
    assert rds["id"].tolist() == expected["id"].tolist()
    lines = (root / "selected/rds.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == rds["id"].tolist()
    summary = pd.read_parquet(root / "eval/summary.parquet")
    assert sorted(summary["selection"].unique()) == sorted(METHODS)
    assert np.isfinite(summary["loss"]).all()
    comp = pd.read_parquet(root / "selected/composition.parquet")
    assert comp["rds"].sum() == N_SELECTED


@pytest.mark.slow
def test_rds_cost_beside_less(rds_run):
    costs = pd.read_parquet(rds_run / "results/select/eval/costs.parquet")
    total = costs[costs["stage"] == "total"].set_index("selection")
    assert list(total.index) == METHODS
    assert total.loc["random", "jobs"] == 0 and total.loc["random", "wall_seconds"] == 0
    assert total.loc["rds", "jobs"] == 3 and total.loc["rds", "wall_seconds"] > 0
    n_grads = SELECT["warmup"]["epochs"] * 2 * SELECT["grads"]["shards"]
    assert total.loc["less", "jobs"] == 1 + n_grads + 1 and total.loc["less", "wall_seconds"] > 0
    stages = set(costs.loc[costs["selection"] == "rds", "stage"])
    assert stages == {"hidden_states", "rds_scores", "total"}
    assert (rds_run / "results/select/eval/costs.html").read_text().count("<tr") == len(costs) + 1


@pytest.mark.slow
def test_pooling_change_reruns_rds_only(rds_run, tmp_path):
    result = run_ok(rds_run, "-n", *TARGETS, configs=_configs(tmp_path, rds={"pooling": "mean"}))
    stats = job_stats(result.output)
    assert stats["hidden_states"] == 2 and stats["rds_scores"] == 1, stats
    assert stats["train_selected"] == 1 and stats["select"] == 1, stats
    assert not {"warmup", "grads", "influence", "train", "select_pool", "select_target"} & set(stats), stats
    done = run_ok(rds_run, "-n", *TARGETS, configs=_configs(tmp_path))
    assert "Nothing to be done" in done.output, done.describe()
