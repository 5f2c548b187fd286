"""End-to-end tests of LESS selection in the workflow (tests/configs/tiny_select.yaml).

The tiny selection run: 3 LEGO skills with 40 training examples each (a pool of 120); LESS
starts from the model of the tiny `random` run; the target is lego-3's validation slice (6
examples); a 2-epoch LoRA warm-up on 25% of the pool; features of width 128 and 256 in 3
shards per checkpoint and set; 10% selected (12 examples); training for 2 epochs on the LESS
selection and on a random one, evaluated on lego-3's test slice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    MAIN_CONFIG,
    NI_EXAMPLE_CONFIG,
    REPO,
    TINY_CONFIG,
    TINY_NI_CONFIG,
    job_stats,
    planned_jobs,
    run_ok,
    shared_data_dir,
    snakemake,
    write_yaml,
)

TINY_SELECT_CONFIG = REPO / "tests" / "configs" / "tiny_select.yaml"
LESS_BBH_CONFIG = REPO / "examples" / "less_bbh" / "config.yaml"
LESS_LEGO_CONFIG = REPO / "examples" / "less_lego" / "config.yaml"
CONFIGS = (MAIN_CONFIG, TINY_CONFIG, TINY_SELECT_CONFIG)
TINY = yaml.safe_load(TINY_CONFIG.read_text())
SELECT = yaml.safe_load(TINY_SELECT_CONFIG.read_text())["select"]

N_SKILLS = TINY["source"]["lego"]["n_vars"]
N_POOL = N_SKILLS * (
    TINY["source"]["lego"]["examples_per_skill"] - TINY["split"]["val"] - TINY["split"]["test"]
)
N_SELECTED = int(SELECT["selection"]["fraction"] * N_POOL)
CKPTS = [f"epoch{e}" for e in range(1, SELECT["warmup"]["epochs"] + 1)]
DIMS = SELECT["grads"]["dims"]
SHARDS = [f"{i}-of-{SELECT['grads']['shards']}" for i in range(1, SELECT["grads"]["shards"] + 1)]
TARGET_SKILL = SELECT["target"]["skills"][0]
N_TARGET = SELECT["target"]["examples_per_skill"]
SELECT_TARGETS = [
    "results/select/eval/summary.parquet",
    "results/select/eval/comparison.png",
    "results/select/eval/less/curves.png",
    "results/select/eval/random/curves.png",
    "results/select/selected/less.jsonl",
    "results/select/selected/composition.png",
    "results/select/selected/scores.png",
    *[f"results/select/influence/d{d}/scores.parquet" for d in DIMS],
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def select_run(tmp_path_factory) -> Path:
    """The tiny selection run for real once; returns its working directory."""
    workdir = tmp_path_factory.mktemp("select_run")
    result = run_ok(workdir, *SELECT_TARGETS, configs=CONFIGS)
    stats = job_stats(result.output)
    assert stats["grads"] == len(CKPTS) * 2 * len(SHARDS), stats
    assert stats["warmup"] == 1 and stats["influence"] == len(DIMS), stats
    assert stats["train_selected"] == 2 and stats["evaluate_selected"] == 2, stats
    assert stats["train"] == 1, stats  # the base run; nothing else of the Skill-It part
    return workdir


def test_tiny_select_config_is_what_the_tests_assume():
    assert (N_POOL, N_SELECTED, len(CKPTS), len(SHARDS)) == (120, 12, 2, 3)


def test_warmup_checkpoints_and_weights(select_run):
    root = select_run / "results/select/warmup"
    for c in CKPTS:
        names = sorted(p.name for p in (root / c).iterdir() if not p.name.startswith("."))
        assert names == [
            "adapter_config.json",
            "adapter_model.safetensors",
            "checkpoint.json",
            "optimizer.json",
            "optimizer.safetensors",
        ]
    subset = pd.read_parquet(root / "subset.parquet")
    assert len(subset) == int(SELECT["warmup"]["fraction"] * N_POOL)
    steps = pd.read_parquet(root / "steps.parquet")
    per_epoch = -(-len(subset) // SELECT["warmup"]["batch_size"])
    assert len(steps) == per_epoch * len(CKPTS)
    weights = json.loads((root / "weights.json").read_text())
    means = [steps["lr"].iloc[e * per_epoch : (e + 1) * per_epoch].mean() for e in range(len(CKPTS))]
    assert [weights["mean_lr"][c] for c in CKPTS] == pytest.approx(means)
    assert [weights["weights"][c] for c in CKPTS] == pytest.approx([m / sum(means) for m in means])
    # the linear schedule decays, so earlier epochs weigh more
    assert weights["weights"]["epoch1"] > weights["weights"]["epoch2"]


def test_datastore_shards_cover_the_pool_and_target(select_run):
    pool = pd.read_parquet(select_run / "results/select/pool.parquet")
    target = pd.read_parquet(select_run / "results/select/target/target.parquet")
    assert len(pool) == N_POOL and len(target) == N_TARGET
    assert set(target["skill"]) == {TARGET_SKILL}
    for c in CKPTS:
        for name, frame in (("candidates", pool), ("target", target)):
            base = select_run / "results/select/grads" / c / name
            ids = pd.concat([pd.read_parquet(base / f"index/{s}.parquet") for s in SHARDS])["id"]
            assert ids.tolist() == frame["id"].tolist()
            for d in DIMS:
                rows = np.concatenate([np.load(base / f"d{d}/{s}.npy") for s in SHARDS])
                assert rows.dtype == np.float16 and rows.shape == (len(frame), d)
                norms = np.linalg.norm(rows.astype(np.float32), axis=1)
                np.testing.assert_allclose(norms, 1.0, atol=2e-3)
            info = json.loads((base / f"info/{SHARDS[0]}.json").read_text())
            assert info["feature"] == ("adam" if name == "candidates" else "sgd")
            assert info["projector"]["kind"] == "rademacher-portable"
            assert info["projector"]["output_dim"] == max(DIMS)


def test_scores_and_selection(select_run):
    pool = pd.read_parquet(select_run / "results/select/pool.parquet")
    for d in DIMS:
        scores = pd.read_parquet(select_run / f"results/select/influence/d{d}/scores.parquet")
        assert list(scores.columns) == ["id", "skill", "score", "status", f"score_{TARGET_SKILL}"]
        assert scores["id"].tolist() == pool["id"].tolist()
        assert (scores["status"] == "scored").all() and np.isfinite(scores["score"]).all()
        assert scores["score"].between(-1, 1).all()
    scores = pd.read_parquet(select_run / f"results/select/influence/d{max(DIMS)}/scores.parquet")
    less = pd.read_parquet(select_run / "results/select/selected/less.parquet")
    assert len(less) == N_SELECTED and less["rank"].tolist() == list(range(1, N_SELECTED + 1))
    expected = scores.sort_values(["score", "id"], ascending=[False, True]).head(N_SELECTED)
    assert less["id"].tolist() == expected["id"].tolist()
    assert np.all(np.diff(less["score"].to_numpy()) <= 0)
    lines = (select_run / "results/select/selected/less.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == less["id"].tolist()
    assert {"prompt", "answer", "skill", "score"} <= set(json.loads(lines[0]))
    random = pd.read_parquet(select_run / "results/select/selected/random.parquet")
    assert len(random) == N_SELECTED and set(random["id"]) <= set(pool["id"])
    comp = pd.read_parquet(select_run / "results/select/selected/composition.parquet")
    assert comp["pool"].sum() == N_POOL
    assert comp["less"].sum() == N_SELECTED and comp["random"].sum() == N_SELECTED
    for col in ("pool_share", "less_share", "random_share"):
        assert comp[col].sum() == pytest.approx(1.0)
    for png in ("composition.png", "scores.png"):
        assert (select_run / "results/select/selected" / png).read_bytes()[:8] == PNG_MAGIC


def test_training_on_selections_and_target_metrics(select_run):
    summary = pd.read_parquet(select_run / "results/select/eval/summary.parquet")
    assert sorted(summary["selection"]) == ["less", "random"]
    assert set(summary["skill"]) == {TARGET_SKILL}
    assert (summary["n"] == TINY["split"]["test"]).all()
    assert np.isfinite(summary["loss"]).all() and summary["accuracy"].between(0, 1).all()
    for sel in ("less", "random"):
        steps = pd.read_parquet(select_run / f"results/select/train/{sel}/steps.parquet")
        per_epoch = -(-N_SELECTED // SELECT["warmup"]["batch_size"])
        assert len(steps) == SELECT["train"]["epochs"] * per_epoch
        curve = pd.read_parquet(select_run / f"results/select/train/{sel}/target_curve.parquet")
        assert curve["step"].min() == 0 and curve["step"].max() == len(steps)
        # the model improves on the target's loss during training
        first, last = curve.loc[curve["step"].idxmin(), "loss"], curve.loc[curve["step"].idxmax(), "loss"]
        assert last < first
        assert (select_run / f"results/select/eval/{sel}/curves.png").read_bytes()[:8] == PNG_MAGIC
    assert not any((select_run / "results/resume/select/train").glob("*/step-*"))


def test_second_dry_run_has_nothing_to_do(select_run):
    result = run_ok(select_run, "-n", *SELECT_TARGETS, configs=CONFIGS)
    assert "Nothing to be done" in result.output, result.describe()


def test_selection_fraction_change_reruns_selection_and_training_only(select_run, tmp_path):
    override = write_yaml(tmp_path / "frac.yaml", {"select": {"selection": {"fraction": 0.2}}})
    result = run_ok(select_run, "-n", *SELECT_TARGETS, configs=(*CONFIGS, override))
    assert job_stats(result.output) == {
        "select": 2,
        "select_composition": 1,
        "train_selected": 2,
        "evaluate_selected": 2,
        "compare_selected": 1,
    }, result.describe()


def test_target_change_reruns_target_features_not_warmup_or_candidates(select_run, tmp_path):
    override = write_yaml(tmp_path / "target.yaml", {"select": {"target": {"examples_per_skill": 4}}})
    result = run_ok(select_run, "-n", *SELECT_TARGETS, configs=(*CONFIGS, override))
    stats = job_stats(result.output)
    assert "warmup" not in stats and "select_pool" not in stats, stats
    assert stats["select_target"] == 1 and stats["grads"] == len(CKPTS) * len(SHARDS), stats
    assert stats["influence"] == len(DIMS), stats
    grads = [job.wildcards for job in planned_jobs(result.output) if job.rule == "grads"]
    assert len(grads) == len(CKPTS) * len(SHARDS) and all("set=target" in w for w in grads), grads


def test_one_shard_equals_three_shards(select_run, tmp_path):
    """--set-scatter grads=1 recomputes the datastore unsharded: the same rows, bit for bit."""
    work = tmp_path / "copy"
    shutil.copytree(select_run, work, symlinks=True)
    wanted = [f"results/select/grads/{CKPTS[-1]}/candidates/d{d}/1-of-1.npy" for d in DIMS] + [
        f"results/select/grads/{CKPTS[0]}/target/d{d}/1-of-1.npy" for d in DIMS
    ]
    result = run_ok(work, *wanted, "--set-scatter", "grads=1", configs=CONFIGS)
    assert job_stats(result.output) == {"grads": 2}, result.describe()
    for path in wanted:
        base = (work / path).parent
        whole = np.load(work / path)
        parts = np.concatenate([np.load(base / f"{s}.npy") for s in SHARDS])
        assert np.array_equal(whole, parts), path


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"select": {"enabled": True}}, "neither select.target.skills nor select.target.files"),
        (
            {"select": {"enabled": True, "target": {"skills": ["lego-1"]}, "selection": {"dim": 512}}},
            "select.selection.dim",
        ),
        (
            {"select": {"enabled": True, "target": {"files": [{"path": "/nonexistent/*.json"}]}}},
            "no file matches",
        ),
    ],
)
def test_bad_select_config_fails_before_any_job(tmp_path, override, expected):
    configs = (MAIN_CONFIG, TINY_CONFIG, write_yaml(tmp_path / "bad.yaml", override))
    result = snakemake(tmp_path, "-n", configs=configs)
    assert result.returncode != 0 and expected in result.output, result.describe()


def test_less_example_configs_are_valid_overrides(tmp_path):
    result = run_ok(tmp_path, "-n", configs=(MAIN_CONFIG, LESS_LEGO_CONFIG))
    assert "warmup" in job_stats(result.output), result.describe()


@pytest.mark.slow
def test_bbh_target_example_runs(tmp_path):
    """The BBH example (NI candidates, 27 BBH tasks as target skills) end to end, made tiny."""
    data = shared_data_dir()
    if data is None or not (data / "bbh").is_dir() or not (data / "ni_task_subset").is_dir():
        pytest.skip(
            "shared data not found: set SKILLMIX_SHARED_DATA to the folder holding bbh/ and ni_task_subset/"
        )
    example = yaml.safe_load(LESS_BBH_CONFIG.read_text())
    pattern = example["select"]["target"]["files"][0]["path"]
    assert (REPO / pattern).parent.resolve() == (REPO.parent / "shared/data/bbh").resolve()
    ni = data / "ni_task_subset"
    paths = write_yaml(
        tmp_path / "paths.yaml",
        {
            "source": {
                "natural_instructions": {
                    "tasks_dir": str(ni / "tasks"),
                    "categories_csv": str(ni / "task_categories.csv"),
                    "max_per_task": 40,
                }
            },
            "split": {"val": 5, "test": 5},
            "train": {"strategies": ["random"]},
            "select": {
                "target": {
                    "files": [{"path": str(data / "bbh" / "*.json")}],
                    "eval_examples_per_skill": 4,
                },
                "lora": {"r": 4, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
                "warmup": {"epochs": 2, "fraction": 0.05},
                "grads": {"dims": [256], "shards": 2},
                "train": {"epochs": 1},
            },
        },
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    configs = (MAIN_CONFIG, NI_EXAMPLE_CONFIG, LESS_BBH_CONFIG, TINY_NI_CONFIG, paths)
    run_ok(
        workdir,
        "results/select/eval/summary.parquet",
        "results/select/selected/composition.png",
        configs=configs,
    )
    target = pd.read_parquet(workdir / "results/select/target/target.parquet")
    assert target["skill"].nunique() == 27 and len(target) == 27 * 3
    summary = pd.read_parquet(workdir / "results/select/eval/summary.parquet")
    assert set(summary["skill"]) == set(target["skill"]) and (summary["n"] == 4).all()
    comp = pd.read_parquet(workdir / "results/select/selected/composition.parquet")
    assert comp["pool"].sum() == len(pd.read_parquet(workdir / "results/select/pool.parquet"))
    assert len(comp) == 8


def test_editing_the_influence_code_reruns_influence_and_what_follows_only(select_run, tmp_path):
    """Snakemake does not track imported modules; the per-stage code version does. A copy of the
    project with one edited line in skillmix/selection/influence.py re-plans influence and its downstream,
    never the warm-up, the gradient datastore or the training before it."""
    import os

    repo = tmp_path / "repo"
    repo.mkdir()
    for part in ("Snakefile", "config.yaml", "rules", "workflow", "src", "profiles", "envs"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, repo / part)
    influence = repo / "src" / "skillmix" / "selection" / "influence.py"
    influence.write_text(influence.read_text() + "\n# an edit of the influence code\n")
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}

    done = run_ok(select_run, "-n", *SELECT_TARGETS, configs=CONFIGS, snakefile=repo / "Snakefile", env=env)
    stats, output = job_stats(done.output), done.output
    assert "influence" in stats and stats["influence"] == len(DIMS), output[-3000:]
    assert not {"warmup", "grads", "select_pool", "select_target", "train", "slice"} & set(stats), stats
    assert {"select", "select_composition", "train_selected", "evaluate_selected", "compare_selected"} <= set(
        stats
    ), stats
    assert "Params have changed" in output or "params" in output.lower()
