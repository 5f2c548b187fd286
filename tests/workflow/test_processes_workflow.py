"""A rule that asks for two processes runs its job in two (DDP over gloo on the CPU) and writes what
one process writes. (That the two give the same run as one is tested on the job functions,
tests/engine/test_processes.py.)"""

from __future__ import annotations

import json

import pandas as pd
from workflow_helpers import MAIN_CONFIG, TINY_CONFIG, run_ok, write_yaml


def test_train_rule_with_two_processes(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    override = write_yaml(
        tmp_path / "p2.yaml",
        {
            "train": {"strategies": ["random"], "gradient_accumulation_steps": 2},
            "resources": {"train": {"processes": 2, "threads": 2, "gpu": 0}},
        },
    )
    run_ok(work, "results/train/random/steps.parquet", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    run = work / "results/train/random"
    assert json.loads((run / "job_metrics.json").read_text())["processes"] == 2
    log = (work / "logs/train/random.log").read_text()
    assert "launching skillmix.mixing.job:train_job in 2 processes" in log, log
    assert "[process 0]" in log and "[process 1]" in log, log
    steps = pd.read_parquet(run / "steps.parquet")
    assert len(steps) == 12 and steps["loss"].notna().all()
    assert (run / "model" / "model.safetensors").is_file()
