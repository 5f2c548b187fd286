"""Crash-safety: kill -9 of a training job and of a gradient job part-way, then a re-run.

The re-run (the default profile sets rerun-incomplete) resumes training from its last
checkpoint, says so in the log, and ends with results identical to an uninterrupted run; a
killed gradient shard is recomputed to the same bytes. No declared output exists half-written,
and a killed attempt's temporary files are cleared by the next one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from workflow_helpers import MAIN_CONFIG, REPO, TINY_CONFIG, run_ok, snakemake_command, write_yaml

from skillmix.infra.jobs import write_parquet

TINY_SELECT_CONFIG = REPO / "tests" / "configs" / "tiny_select.yaml"
LONG_TRAINING = {"train": {"strategies": ["random"], "steps": 240, "resume_every": 40, "eval_every": 80}}
TRAIN_TARGET = "results/train/random/steps.parquet"


def test_a_killed_attempt_leaves_no_debris(tmp_path):
    target = tmp_path / "table.parquet"
    (tmp_path / ".table.parquet.tmp-99999999").write_bytes(b"half")  # as a SIGKILLed writer leaves it
    write_parquet(pd.DataFrame({"a": [1]}), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]


def start(workdir: Path, *targets: str, configs) -> subprocess.Popen:
    command = snakemake_command(workdir, *targets, configs=configs, cores=1)
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def job_pid(workdir: Path, script: str) -> int | None:
    """The pid of the running job whose Snakemake script ends in `script` (e.g. train.py)."""
    out = subprocess.run(
        ["pgrep", "-f", f"{workdir}/.snakemake/scripts/tmp.*{script}"], capture_output=True, text=True
    )
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else None


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_training_killed_part_way_resumes_and_matches_an_uninterrupted_run(tmp_path):
    override = write_yaml(tmp_path / "long.yaml", LONG_TRAINING)
    configs = (MAIN_CONFIG, TINY_CONFIG, override)
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    reference.mkdir()
    crashed.mkdir()
    run_ok(reference, TRAIN_TARGET, configs=configs)

    proc = start(crashed, TRAIN_TARGET, configs=configs)
    ckpt = crashed / "results/resume/train/random"
    wait_for(lambda: any(int(p.name.split("-")[1]) >= 80 for p in ckpt.glob("step-*")), 600, "a checkpoint")
    pid = wait_for(lambda: job_pid(crashed, "train.py"), 30, "the training job")
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=120) != 0
    assert not (crashed / TRAIN_TARGET).exists() and not (crashed / "results/train/random/model").exists()
    saved = sorted(int(p.name.split("-")[1]) for p in ckpt.glob("step-*"))
    assert saved and saved[-1] < LONG_TRAINING["train"]["steps"]

    run_ok(crashed, TRAIN_TARGET, configs=configs)
    log = (crashed / "logs/train/random.log").read_text()
    assert f"(step {saved[-1]} of 240)" in log, log[-3000:]
    for name in ("steps.parquet", "val_curve.parquet", "skill_counts.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(crashed / "results/train/random" / name),
            pd.read_parquet(reference / "results/train/random" / name),
        )
    a = load_file(crashed / "results/train/random/model/model.safetensors")
    b = load_file(reference / "results/train/random/model/model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert not ckpt.exists() or not any(ckpt.iterdir())  # checkpoints go once the run is done


@pytest.mark.slow
def test_gradient_job_killed_part_way_is_recomputed_identically(tmp_path):
    configs = (MAIN_CONFIG, TINY_CONFIG, TINY_SELECT_CONFIG)
    work = tmp_path / "work"
    work.mkdir()
    shard = "results/select/grads/epoch1/candidates/d256/2-of-3.npy"
    run_ok(work, "results/select/warmup/weights.json", configs=configs)

    proc = start(work, shard, configs=configs)
    pid = wait_for(lambda: job_pid(work, "grads.py"), 120, "the gradient job")
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=120) != 0
    assert not (work / shard).exists()
    assert not list((work / "results/select/grads").rglob("2-of-3.*"))  # nothing of the shard

    run_ok(work, shard, configs=configs)
    again = tmp_path / "again"
    shutil.copytree(work, again, symlinks=True)
    run_ok(again, shard, "--forcerun", "grads", configs=configs)
    assert (work / shard).read_bytes() == (again / shard).read_bytes()
    debris = [p for p in (work / "results").rglob(".*tmp-*")]
    assert not debris, debris
