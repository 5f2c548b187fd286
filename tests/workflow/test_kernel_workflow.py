"""The eNTK stage in the workflow (tests/configs/tiny_kernel.yaml): task, kernels, solvers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import MAIN_CONFIG, REPO, TINY_CONFIG, job_stats, run_ok, snakemake, write_yaml

from skillmix.infra.jobs import shard_range

TINY_KERNEL_CONFIG = REPO / "tests" / "configs" / "tiny_kernel.yaml"
CONFIGS = (MAIN_CONFIG, TINY_CONFIG, TINY_KERNEL_CONFIG)
KERNEL = yaml.safe_load(TINY_KERNEL_CONFIG.read_text())["kernel"]
TARGETS = [
    "results/kernel/solutions.parquet",
    "results/kernel/comparison.parquet",
    "results/kernel/solutions.png",
]
FORMULAS = ["sgd", "signgd", "asymmetric_signgd"]
N_TRAIN = 2 * KERNEL["k_shot"]
N_EVAL = KERNEL["max_eval"]
SHARDS = KERNEL["shards"]
# every job of the kernel stage after slicing
KERNEL_JOBS = {
    "kernel_task": 1,
    "kernel_features": SHARDS,
    "kernel": 1,
    "kernel_finetune": 2,
    "kernel_solve": 1,
}


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("kernel_run")
    result = run_ok(workdir, *TARGETS, configs=CONFIGS)
    assert job_stats(result.output) == {"slice": 1, **KERNEL_JOBS}, result.output
    return workdir


def test_task_table(kernel_run):
    task = pd.read_parquet(kernel_run / "results/kernel/task.parquet")
    assert json.loads((kernel_run / "results/kernel/words.json").read_text()) == ["0", "1"]
    assert task["split"].value_counts().to_dict() == {"train": N_TRAIN, "val": N_EVAL, "test": N_EVAL}
    train = task[task["split"] == "train"]
    assert train["label"].value_counts().to_dict() == {0: KERNEL["k_shot"], 1: KERNEL["k_shot"]}
    assert set(task["skill"]) == {"lego-1"}
    # LEGO prompts end in "b = val" and the answer is the label word "1"
    assert all(p.endswith("= val") for p in task["prompt"])
    assert (task["word"] == task["label"].astype(str)).all()


def test_kernel_files(kernel_run):
    for formula in FORMULAS:
        data = np.load(kernel_run / f"results/kernel/{formula}/kernels.npz")
        lead = (2,) if formula == "asymmetric_signgd" else ()
        for split, m in (("train", N_TRAIN), ("val", N_EVAL), ("test", N_EVAL)):
            assert data[f"K_{split}"].shape == (*lead, N_TRAIN, 2, m, 2)
            assert data[f"K_{split}"].dtype == np.float64
            assert data[f"f0_{split}"].shape == (m, 2) and data[f"y_{split}"].shape == (m,)
        k = data["K_train"]
        if formula == "sgd":
            flat = k.reshape(N_TRAIN * 2, N_TRAIN * 2)
            np.testing.assert_allclose(flat, flat.T, atol=1e-12)
            assert np.linalg.eigvalsh(flat).min() > -1e-8 * np.abs(flat).max()  # PSD
        if formula == "signgd":
            assert np.array_equal(k, np.round(k))
        if formula == "asymmetric_signgd":
            np.testing.assert_allclose(k[1], k[0].transpose(2, 3, 0, 1), atol=1e-12)


def test_solutions_table_and_plot(kernel_run):
    table = pd.read_parquet(kernel_run / "results/kernel/solutions.parquet")
    solved = table[table["solver"] != "initial_model"]
    assert len(solved) == len(FORMULAS) * 2 * 2  # formulas × solvers × (val, test)
    assert set(solved["formula"]) == set(FORMULAS)
    assert table["accuracy"].between(0, 1).all() and (table["n"] == N_EVAL).all()
    assert (kernel_run / "results/kernel/solutions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetuning_next_to_the_solvers(kernel_run):
    comparison = pd.read_parquet(kernel_run / "results/kernel/comparison.parquet")
    assert len(comparison) == len(FORMULAS) * 2
    assert dict(zip(comparison["formula"], comparison["finetune_optimizer"], strict=True)) == {
        "sgd": "sgd",
        "signgd": "adam",
        "asymmetric_signgd": "adam",
    }
    assert {"lstsq_accuracy", "logistic_accuracy", "finetune_accuracy"} <= set(comparison.columns)
    assert comparison["finetune_accuracy"].between(0, 1).all()
    for optimizer in ("sgd", "adam"):
        steps = pd.read_parquet(kernel_run / f"results/kernel/finetune/{optimizer}_steps.parquet")
        assert len(steps) == KERNEL["finetune"]["steps"]
        assert steps["loss"].iloc[-1] < steps["loss"].iloc[0]  # training fits the k-shot split
        metrics = pd.read_parquet(kernel_run / f"results/kernel/finetune/{optimizer}.parquet")
        assert list(metrics["split"]) == ["val", "test"] and (metrics["n"] == N_EVAL).all()


def test_solver_change_reruns_only_the_solvers(kernel_run, tmp_path):
    override = write_yaml(tmp_path / "solve.yaml", {"kernel": {"solvers": ["lstsq"], "reg": 0.01}})
    result = run_ok(kernel_run, "-n", *TARGETS, configs=(*CONFIGS, override))
    assert job_stats(result.output) == {"kernel_solve": 1}, result.output


def test_k_shot_change_reruns_task_kernels_and_solvers(kernel_run, tmp_path):
    override = write_yaml(tmp_path / "k.yaml", {"kernel": {"k_shot": 3}})
    result = run_ok(kernel_run, "-n", *TARGETS, configs=(*CONFIGS, override))
    assert job_stats(result.output) == KERNEL_JOBS, result.output


def test_answers_outside_the_label_words_stop_the_task(tmp_path):
    override = write_yaml(tmp_path / "bad.yaml", {"kernel": {"label_words": ["0", "yes"]}})
    result = snakemake(tmp_path, *TARGETS, configs=(*CONFIGS, override))
    assert result.returncode != 0
    log = (tmp_path / "logs/kernel/task.log").read_text()
    assert "need at least two label words" in log or "not label words" in log, log


def test_kernel_of_a_trained_run_waits_for_that_run(tmp_path):
    override = write_yaml(tmp_path / "base.yaml", {"kernel": {"base_run": "stratified"}})
    result = run_ok(tmp_path, "-n", *TARGETS, configs=(*CONFIGS, override))
    stats = job_stats(result.output)
    assert stats.get("train") == 1 and stats.get("kernel") == 1, result.output


def test_kernel_example_config_is_a_valid_override(tmp_path):
    example = REPO / "examples" / "kernel_lego" / "config.yaml"
    result = run_ok(tmp_path, "-n", configs=(MAIN_CONFIG, example))
    stats = job_stats(result.output)
    assert stats.get("kernel") == 1 and stats.get("kernel_solve") == 1, result.output


def test_binary_kernels_and_the_asym_solver(kernel_run, tmp_path):
    """kernel.binary collapses the two label words to f1 − f0; the asym solver then runs."""
    work = tmp_path / "copy"
    shutil.copytree(kernel_run, work, symlinks=True)
    override = write_yaml(
        tmp_path / "binary.yaml", {"kernel": {"binary": True, "solvers": ["lstsq", "asym"]}}
    )
    run_ok(work, *TARGETS, configs=(*CONFIGS, override))
    data = np.load(work / "results/kernel/asymmetric_signgd/kernels.npz")
    assert data["K_test"].shape == (2, N_TRAIN, 1, N_EVAL, 1) and data["f0_test"].shape == (N_EVAL, 1)
    table = pd.read_parquet(work / "results/kernel/solutions.parquet")
    asym = table[table["solver"] == "asym"]
    assert list(asym["formula"]) == ["asymmetric_signgd"] * 2 and list(asym["split"]) == ["val", "test"]
    assert asym["accuracy"].between(0, 1).all()
    assert len(table[table["solver"] == "lstsq"]) == 3 * 2


def test_kernels_do_not_depend_on_the_shard_count(kernel_run, tmp_path):
    """--set-scatter kernel=3 (uneven row ranges) reruns only the features and the kernels, and
    gives the same kernels, bit for bit."""
    work = tmp_path / "copy"
    shutil.copytree(kernel_run, work, symlinks=True)
    result = run_ok(work, *TARGETS, "--set-scatter", "kernel=3", configs=CONFIGS)
    assert job_stats(result.output) == {"kernel_features": 3, "kernel": 1, "kernel_solve": 1}, result.output
    shards = sorted((work / "results/kernel/features").glob("*-of-3.npz"))
    rows = [np.load(path)["rows"] for path in shards]
    n = N_TRAIN + 2 * N_EVAL
    assert [r.tolist() for r in rows] == [list(range(*shard_range(n, i, 3))) for i in (1, 2, 3)]
    for formula in FORMULAS:
        ref = np.load(kernel_run / f"results/kernel/{formula}/kernels.npz")
        new = np.load(work / f"results/kernel/{formula}/kernels.npz")
        for split in ("train", "val", "test"):
            assert np.array_equal(ref[f"K_{split}"], new[f"K_{split}"]), (formula, split)
            assert np.array_equal(ref[f"f0_{split}"], new[f"f0_{split}"])


def test_projected_kernels_approximate_the_exact_ones(kernel_run, tmp_path):
    """kernel.projection.dim: the SGD kernel of JL-projected features stays close to the exact one."""
    work = tmp_path / "copy"
    shutil.copytree(kernel_run, work, symlinks=True)
    override = write_yaml(tmp_path / "proj.yaml", {"kernel": {"projection": {"dim": 4096}}})
    result = run_ok(work, *TARGETS, configs=(*CONFIGS, override))
    assert job_stats(result.output) == {"kernel_features": SHARDS, "kernel": 1, "kernel_solve": 1}, (
        result.output
    )
    features = np.load(work / "results/kernel/features/1-of-2.npz")
    assert features["sgd"].shape[-1] == 4096 and features["sign"].dtype == np.float32
    exact = np.load(kernel_run / "results/kernel/sgd/kernels.npz")["K_test"]
    projected = np.load(work / "results/kernel/sgd/kernels.npz")["K_test"] / 4096
    err = np.linalg.norm(projected - exact) / np.linalg.norm(exact)
    assert err < 0.1, err
