"""A rule that asks for two processes runs its job in two (DDP over gloo on the CPU) and writes what
one process writes."""

from __future__ import annotations

import json

import pandas as pd
from workflow_helpers import MAIN_CONFIG, TINY_CONFIG, run_ok, write_yaml


def test_train_rule_with_two_processes(tmp_path):
    runs = {}
    for n in (1, 2):
        work = tmp_path / f"p{n}"
        work.mkdir()
        override = write_yaml(
            tmp_path / f"p{n}.yaml",
            {
                "train": {"strategies": ["random"], "gradient_accumulation_steps": 2},
                "resources": {"train": {"processes": n, "threads": 2, "gpu": 0}},
            },
        )
        run_ok(work, "results/train/random/steps.parquet", configs=(MAIN_CONFIG, TINY_CONFIG, override))
        runs[n] = work / "results/train/random"
    metrics = {n: json.loads((runs[n] / "job_metrics.json").read_text()) for n in runs}
    assert metrics[1]["processes"] == 1 and metrics[2]["processes"] == 2
    log = (tmp_path / "p2/logs/train/random.log").read_text()
    assert "[process 0]" in log and "[process 1]" in log, log
    s1, s2 = (pd.read_parquet(runs[n] / "steps.parquet") for n in (1, 2))
    assert s1["n_tokens"].tolist() == s2["n_tokens"].tolist()
    assert (s2["loss"] - s1["loss"]).abs().max() < 1e-4
    assert (runs[2] / "model" / "model.safetensors").is_file()
