"""The tiny workflow through profiles/slurm on a real single-node SLURM (marked `slurm`).

`.ci/run` installs Debian's slurm-wlm and munge and snakemake-executor-plugin-slurm, then runs
`pytest -m slurm`. The fixture starts munge, slurmctld and slurmd on loopback with two fake GPUs
and stops them afterwards. Every job must run as a SLURM job; every GPU rule must get one GPU
from SLURM (its CUDA_VISIBLE_DEVICES, logged by the job); the results must equal a local run's.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from slurm_cluster import LoopbackSlurm, missing_requirements
from workflow_helpers import MAIN_CONFIG, REPO, TINY_CONFIG, run_ok, snakemake

pytestmark = pytest.mark.slurm

GPU_RULES = {"graph_run", "train", "evaluate"}
CPU_RULES = {"slice", "graph_assemble", "compare"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing_requirements()
    if reason is None and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        reason = "snakemake-executor-plugin-slurm is not installed"
    if reason:
        pytest.skip(f"no loopback SLURM: {reason}")
    slurm = LoopbackSlurm(tmp_path_factory.mktemp("slurm"))
    slurm.start()
    try:
        yield slurm
    finally:
        slurm.stop()


def run_on_slurm(workdir, *args):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES" and not k.startswith("SLURM_")}
    return snakemake(
        workdir,
        "--workflow-profile", str(REPO / "profiles" / "slurm"),
        # the test cluster: no accounting (squeue status checks, no account), quick first check
        "--slurm-status-command", "squeue", "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs",
        *args,
        configs=(MAIN_CONFIG, TINY_CONFIG), cores=None, env=env, timeout=1500,
    )  # fmt: skip


def test_tiny_workflow_runs_on_slurm_like_locally(cluster, tmp_path):
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    slurm_dir.mkdir()
    done = run_on_slurm(slurm_dir)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-8000:]
    finished = Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", done.stdout + done.stderr))
    assert finished["graph_run"] == 6 and finished["train"] == 3 and finished["evaluate"] == 3, finished
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", done.stdout + done.stderr)
    assert len(submitted) == sum(finished.values()) - finished["all"], (submitted, finished)

    # every job ran inside a SLURM job; GPU rules got exactly one of the two fake GPUs from SLURM
    logs = [
        p
        for p in (slurm_dir / "logs").rglob("*.log")
        if p.relative_to(slurm_dir / "logs").parts[0] != "slurm"
    ]
    seen = set()
    for log in logs:
        rule = log.relative_to(slurm_dir / "logs").parts[0]
        text = log.read_text()
        job = re.search(r"SLURM job (\d+)", text)
        assert job, f"{log} did not run as a SLURM job:\n{text[:2000]}"
        gpus = re.search(r"GPUs set by SLURM job \d+: CUDA_VISIBLE_DEVICES=(\S*)", text)
        if rule in GPU_RULES:
            assert gpus and gpus.group(1) in {"0", "1"}, f"{log}: no GPU from SLURM:\n{text[:2000]}"
            # SLURM recorded the request: one GPU (job records live MinJobAge = 300 s)
            info = subprocess.run(["scontrol", "show", "job", job.group(1)], capture_output=True, text=True)
            assert re.search(r"gres/gpu(:\w+)?=1\b|gpu:1\b", info.stdout), info.stdout
        elif rule in CPU_RULES:
            assert gpus is None, f"{log}: a CPU rule got a GPU"
        seen.add(rule)
    assert GPU_RULES | CPU_RULES <= seen, seen

    # the same results as a local run
    local_dir.mkdir()
    run_ok(local_dir, configs=(MAIN_CONFIG, TINY_CONFIG))
    for path in ("results/graph/brute_force/adjacency.npy",):
        np.testing.assert_array_equal(np.load(slurm_dir / path), np.load(local_dir / path))
    for run in ("random", "stratified", "skillit"):
        a = pd.read_parquet(slurm_dir / f"results/eval/{run}/metrics.parquet")
        b = pd.read_parquet(local_dir / f"results/eval/{run}/metrics.parquet")
        pd.testing.assert_frame_equal(a, b)
