"""The optional lm-eval rule on a trained model of the tiny workflow, offline, with a local task."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from lm_eval_tasks import choice_task
from workflow_helpers import MAIN_CONFIG, TINY_CONFIG, run_ok, snakemake, write_yaml

# lm-eval is the optional extra `lmeval`: without it the workflow refuses lm_eval.enabled before it
# checks lm_eval.models, so both tests need it and skip, with the reason, when it is absent
pytest.importorskip("lm_eval", reason="lm-eval is not installed (the extra: pip install -e '.[lmeval]')")
pytestmark = pytest.mark.extras  # CI runs them again once the extras are installed


def lm_eval_config(tmp_path, **override):
    rows = [{"question": f"a={i}", "choices": ["0", "1"], "label": i % 2} for i in range(6)]
    tasks = choice_task(tmp_path / "tasks", "toy_pick", rows)
    block = {
        "enabled": True,
        "models": ["random"],
        "tasks": ["toy_pick"],
        "include_path": str(tasks),
        **override,
    }
    return write_yaml(tmp_path / "lm_eval.yaml", {"train": {"strategies": ["random"]}, "lm_eval": block})


def test_unknown_lm_eval_model_fails_before_any_job(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(
        work, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, lm_eval_config(tmp_path, models=["skillit"]))
    )
    assert result.returncode != 0
    assert "lm_eval.models names 'skillit', which is neither one of train.strategies" in result.output


@pytest.mark.slow
def test_lm_eval_rule_scores_a_trained_model(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    run_ok(
        work, "results/lm_eval/summary.parquet", configs=(MAIN_CONFIG, TINY_CONFIG, lm_eval_config(tmp_path))
    )
    summary = pd.read_parquet(work / "results/lm_eval/summary.parquet")
    assert summary[["model", "task", "metric", "n"]].values.tolist() == [["random", "toy_pick", "acc", 6]]
    assert 0.0 <= summary["value"].iloc[0] <= 1.0
    results = json.loads((work / "results/lm_eval/random/results.json").read_text())
    assert results["results"]["toy_pick"]["acc,none"] == summary["value"].iloc[0]
