"""End-to-end tests of the Snakemake workflow on a tiny config (tests/configs/tiny.yaml).

Snakemake runs as a subprocess with ``--directory`` pointing at a temporary folder, so the
repository's own results/ are never touched. The tiny run: 3 LEGO skills (60 examples each,
val 10 / test 10), a 1-layer model, 12 training steps with validation at steps 0, 6 and 12,
strategies random and stratified.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    DEFAULT_PROFILE,
    MAIN_CONFIG,
    NI_EXAMPLE_CONFIG,
    REPO,
    TINY_CONFIG,
    TINY_NI_CONFIG,
    files_under,
    job_stats,
    planned_jobs,
    reasons_of,
    run_ok,
    shared_data_dir,
    snakemake,
    write_yaml,
)

TINY = yaml.safe_load(TINY_CONFIG.read_text())
RUNS = TINY["train"]["strategies"]
STEPS = TINY["train"]["steps"]
EVAL_EVERY = TINY["train"]["eval_every"]
VAL_STEPS = sorted({*range(0, STEPS + 1, EVAL_EVERY), STEPS})
N_SKILLS = TINY["source"]["lego"]["n_vars"]
EXAMPLES_PER_SKILL = TINY["source"]["lego"]["examples_per_skill"]
N_VAL, N_TEST = TINY["split"]["val"], TINY["split"]["test"]
EVAL_CAP = TINY["eval"]["max_examples_per_skill"]
BATCH = TINY["train"]["batch_size"]

METRICS_COLUMNS = ["run", "split", "step", "skill", "loss", "accuracy", "n"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FULL_DAG = {"slice": 1, "train": 2, "evaluate": 2, "all": 1}


def test_tiny_config_values_are_what_the_tests_assume():
    """The numbers below are derived from tiny.yaml; make sure they describe a tiny run."""
    assert (N_SKILLS, EXAMPLES_PER_SKILL, N_VAL, N_TEST) == (3, 60, 10, 10)
    assert RUNS == ["random", "stratified"]
    assert VAL_STEPS == [0, 6, 12]
    assert TINY["model"]["max_length"] <= TINY["model"]["tiny"]["max_positions"]


# --------------------------------------------------------------------------- dry run


def test_dry_run_plans_every_job_before_the_checkpoint(tmp_path):
    result = run_ok(tmp_path, "-n")
    assert job_stats(result.output) == FULL_DAG, result.describe()
    jobs = planned_jobs(result.output)
    assert sorted(job.wildcards for job in jobs if job.rule == "train") == [f"run={r}" for r in RUNS]
    assert sorted(job.wildcards for job in jobs if job.rule == "evaluate") == [f"run={r}" for r in RUNS]
    # The workflow profile next to the Snakefile is used from another working directory.
    assert f"Using workflow specific profile {DEFAULT_PROFILE}" in result.output, result.describe()
    assert "This was a dry-run" in result.output
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- one real run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny workflow run for real once; returns its working directory."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    result = run_ok(workdir)
    assert "Nothing to be done" not in result.output
    return workdir


@pytest.fixture(scope="module")
def tiny_manifest(tiny_run) -> dict:
    return json.loads((tiny_run / "results/slices/manifest.json").read_text())


def test_every_declared_output_exists(tiny_run, tiny_manifest):
    slugs = [skill["slug"] for skill in tiny_manifest["skills"]]
    assert len(slugs) == N_SKILLS
    for split in ("train", "val", "test"):
        found = sorted(path.name for path in (tiny_run / "results/slices" / split).glob("*.parquet"))
        assert found == sorted(f"{slug}.parquet" for slug in slugs), split
    for run in RUNS:
        train = tiny_run / "results/train" / run
        for name in ("steps.parquet", "skill_counts.parquet", "val_curve.parquet", "job_metrics.json"):
            assert (train / name).is_file() and (train / name).stat().st_size > 0, train / name
        assert (train / "model").is_dir()
        assert (train / "model" / "config.json").is_file()
        assert list((train / "model").glob("*.safetensors")), "no model weights saved"
        for name in ("metrics.parquet", "curves.png"):
            path = tiny_run / "results/eval" / run / name
            assert path.is_file() and path.stat().st_size > 0, path


def test_manifest_counts_match_the_split(tiny_manifest):
    assert [skill["name"] for skill in tiny_manifest["skills"]] == [
        f"lego-{i}" for i in range(1, N_SKILLS + 1)
    ]
    for skill in tiny_manifest["skills"]:
        assert skill["counts"] == {
            "train": EXAMPLES_PER_SKILL - N_VAL - N_TEST,
            "val": N_VAL,
            "test": N_TEST,
        }


@pytest.mark.parametrize("run", RUNS)
def test_metrics_table(tiny_run, tiny_manifest, run):
    metrics = pd.read_parquet(tiny_run / "results/eval" / run / "metrics.parquet")
    skills = sorted(skill["name"] for skill in tiny_manifest["skills"])
    assert list(metrics.columns) == METRICS_COLUMNS
    assert set(metrics["run"]) == {run}
    assert set(metrics["split"]) == {"val", "test"}
    val = metrics[metrics["split"] == "val"]
    test = metrics[metrics["split"] == "test"]
    assert sorted(set(val["step"])) == VAL_STEPS
    for step in VAL_STEPS:
        assert sorted(val.loc[val["step"] == step, "skill"]) == skills, f"val step {step}"
    assert set(test["step"]) == {STEPS}
    assert sorted(test["skill"]) == skills
    assert len(metrics) == len(skills) * (len(VAL_STEPS) + 1)
    assert set(val["n"]) == {min(N_VAL, EVAL_CAP)}
    assert set(test["n"]) == {min(N_TEST, EVAL_CAP)}
    assert all(math.isfinite(loss) and loss > 0 for loss in metrics["loss"])
    assert metrics["accuracy"].between(0, 1).all()
    by_step = val.set_index(["step", "skill"])["loss"]
    for skill in skills:
        assert by_step[(STEPS, skill)] < by_step[(0, skill)], f"{skill}: val loss did not decrease"


@pytest.mark.parametrize("run", RUNS)
def test_metrics_agree_with_training_histories(tiny_run, run):
    train = tiny_run / "results/train" / run
    metrics = pd.read_parquet(tiny_run / "results/eval" / run / "metrics.parquet")
    val_curve = pd.read_parquet(train / "val_curve.parquet")
    val = metrics[metrics["split"] == "val"].drop(columns=["run", "split"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(val, val_curve[val.columns.tolist()], check_dtype=False)
    steps = pd.read_parquet(train / "steps.parquet")
    assert steps["step"].tolist() == list(range(1, STEPS + 1))
    assert all(math.isfinite(x) for x in steps["loss"])
    counts = pd.read_parquet(train / "skill_counts.parquet")
    assert (counts.groupby("step")["count"].sum() == BATCH).all()
    assert sorted(set(counts["step"])) == list(range(1, STEPS + 1))
    job = json.loads((train / "job_metrics.json").read_text())
    assert job["steps"] == STEPS
    assert job["resumed_from"] is None
    assert job["device"] == "cpu"


@pytest.mark.parametrize("run", RUNS)
def test_curves_png_is_a_png(tiny_run, run):
    data = (tiny_run / "results/eval" / run / "curves.png").read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > height > 0
    assert data[-8:-4] == b"IEND"


def test_logs_and_benchmarks_exist_for_every_job(tiny_run):
    logs = [tiny_run / "logs/slice/slice.log"]
    logs += [tiny_run / f"logs/train/{run}.log" for run in RUNS]
    logs += [tiny_run / f"logs/evaluate/{run}.log" for run in RUNS]
    for log in logs:
        assert log.is_file(), log
    assert f"sliced {N_SKILLS} skills" in (tiny_run / "logs/slice/slice.log").read_text()
    for run in RUNS:
        assert f"step {STEPS}: mean val loss" in (tiny_run / f"logs/train/{run}.log").read_text()
    benchmarks = ["slice/slice.tsv"] + [f"{rule}/{run}.tsv" for rule in ("train", "evaluate") for run in RUNS]
    for name in benchmarks:
        path = tiny_run / "benchmarks" / name
        assert path.is_file(), path
        header, values = path.read_text().splitlines()[:2]
        assert header.split("\t")[0] == "s"
        assert float(values.split("\t")[0]) > 0


def test_no_checkpoints_left_after_success(tiny_run):
    for run in RUNS:
        directory = tiny_run / "results/checkpoints/train" / run
        assert not directory.exists() or not any(directory.iterdir()), directory


def test_second_dry_run_has_nothing_to_do(tiny_run):
    result = run_ok(tiny_run, "-n")
    assert "Nothing to be done" in result.output, result.describe()
    assert job_stats(result.output) == {}


def test_training_param_change_reruns_train_and_evaluate_only(tiny_run, tmp_path):
    override = write_yaml(tmp_path / "lr.yaml", {"train": {"lr": 0.002}})
    result = run_ok(tiny_run, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    assert job_stats(result.output) == {"train": 2, "evaluate": 2, "all": 1}, result.describe()
    train_reasons = reasons_of(result.output, "train")
    assert len(train_reasons) == 2
    for reason in train_reasons:
        assert "Params have changed since last execution" in reason, reason
        assert "'lr': 0.003" in reason and "'lr': 0.002" in reason, reason
    evaluate_reasons = reasons_of(result.output, "evaluate")
    assert len(evaluate_reasons) == 2
    for reason in evaluate_reasons:
        assert reason.startswith("Input files updated by another job"), reason
        assert "Params have changed" not in reason, reason


def test_dropping_a_strategy_reruns_nothing(tiny_run, tmp_path):
    override = write_yaml(tmp_path / "one.yaml", {"train": {"strategies": RUNS[:1]}})
    result = run_ok(tiny_run, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    assert "Nothing to be done" in result.output, result.describe()


def test_split_seed_change_reruns_slice_and_everything_after(tiny_run, tmp_path):
    override = write_yaml(tmp_path / "seed.yaml", {"split": {"seed": 1}})
    result = run_ok(tiny_run, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    # Snakemake plans the jobs downstream of the checkpoint from the manifest already on disk.
    assert job_stats(result.output) == FULL_DAG, result.describe()
    (slice_reason,) = reasons_of(result.output, "slice")
    assert "Params have changed since last execution" in slice_reason, slice_reason
    assert "'seed': 0" in slice_reason and "'seed': 1" in slice_reason
    train_reasons = reasons_of(result.output, "train")
    assert len(train_reasons) == 2
    for reason in train_reasons:
        assert "Params have changed" not in reason, reason
        assert "results/slices/manifest.json" in reason, reason


def _assert_same_slices(first: Path, second: Path) -> None:
    """The slice Parquet files and manifests under two working directories are byte-identical."""
    a = files_under(first / "results/slices", ["*.parquet", "manifest.json"])
    b = files_under(second / "results/slices", ["*.parquet", "manifest.json"])
    rel = [path.relative_to(first) for path in a]
    assert rel == [path.relative_to(second) for path in b]
    assert len(rel) == 3 * N_SKILLS + 1
    for path in rel:
        assert (first / path).read_bytes() == (second / path).read_bytes(), path


def test_slicing_is_deterministic(tiny_run, tmp_path):
    """Slicing again in another folder gives byte-identical slices and manifest."""
    result = run_ok(tmp_path, "--until", "slice")
    assert job_stats(result.output) == {"slice": 1}, result.describe()
    _assert_same_slices(tiny_run, tmp_path)


@pytest.mark.slow
def test_real_runs_are_deterministic(tiny_run, tmp_path):
    """A second full run in another folder gives identical slices, histories and metrics."""
    run_ok(tmp_path)
    _assert_same_slices(tiny_run, tmp_path)
    for run in RUNS:
        a = pd.read_parquet(tiny_run / "results/eval" / run / "metrics.parquet")
        b = pd.read_parquet(tmp_path / "results/eval" / run / "metrics.parquet")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        for name in ("steps.parquet", "skill_counts.parquet", "val_curve.parquet"):
            pd.testing.assert_frame_equal(
                pd.read_parquet(tiny_run / "results/train" / run / name),
                pd.read_parquet(tmp_path / "results/train" / run / name),
                check_exact=True,
            )


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"train": {"lrr": 1}}, ["'lrr' was unexpected"]),
        ({"train": {"steps": "many"}}, ["'many' is not of type 'integer'", "['train']['steps']"]),
        (
            {"source": {"kind": "nope"}},
            ["'nope' is not one of", "'lego'", "'addition'", "'table'", "'natural_instructions'"],
        ),
    ],
    ids=["unknown-key", "wrong-type", "bad-enum"],
)
def test_bad_config_fails_before_any_job(tmp_path, override, expected):
    path = write_yaml(tmp_path / "bad.yaml", override)
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = snakemake(workdir, configs=(MAIN_CONFIG, TINY_CONFIG, path))
    assert result.returncode != 0, result.describe()
    assert "Error validating config file" in result.output, result.describe()
    for text in expected:
        assert text in result.output, f"{text!r} not in output\n{result.describe()}"
    assert job_stats(result.output) == {}
    for name in ("results", "logs", "benchmarks"):
        assert not (workdir / name).exists(), name


def test_table_without_skill_column_fails_in_slice(tmp_path):
    data = tmp_path / "examples.jsonl"
    data.write_text(
        "".join(
            json.dumps({"category": f"c{i % 2}", "question": f"q{i}", "reply": f"a{i}"}) + "\n"
            for i in range(30)
        )
    )
    override = write_yaml(
        tmp_path / "table.yaml",
        {
            "source": {
                "kind": "table",
                "table": {"path": str(data), "prompt_column": "question", "answer_column": "reply"},
            },
            "split": {"val": 3, "test": 3},
        },
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = snakemake(workdir, configs=(MAIN_CONFIG, TINY_CONFIG, override))
    assert result.returncode != 0, result.describe()
    log = (workdir / "logs/slice/slice.log").read_text()
    assert str(data) in log, log
    assert "column 'skill'" in log and "source.table.skill_column" in log, log
    assert "category" in log, "the error should list the available columns\n" + log
    assert not (workdir / "results/slices/manifest.json").exists()
    assert not (workdir / "logs/train").exists(), "a job after the failed slice ran"


# --------------------------------------------------------------------------- lint


def test_lint_passes():
    result = snakemake(REPO, "--lint", configs=(), cwd=REPO)
    assert result.returncode == 0, result.describe()
    assert "Congratulations, your workflow is in a good condition!" in result.output, result.describe()


# --------------------------------------------------------------------------- NI example


@pytest.mark.slow
def test_ni_example_runs_on_eight_categories(tmp_path):
    data = shared_data_dir()
    if data is None or not (data / "ni_task_subset").is_dir():
        pytest.skip("NI subset not found: set SKILLMIX_SHARED_DATA to the folder holding ni_task_subset/")
    ni = data / "ni_task_subset"
    example = yaml.safe_load(NI_EXAMPLE_CONFIG.read_text())
    block = example["source"]["natural_instructions"]
    # The example's relative paths are meant for a run from the repository root.
    expected = REPO.parent / "shared/data/ni_task_subset"
    assert (REPO / block["tasks_dir"]).resolve() == (expected / "tasks").resolve()
    assert (REPO / block["categories_csv"]).resolve() == (expected / "task_categories.csv").resolve()
    paths = write_yaml(
        tmp_path / "paths.yaml",
        {
            "source": {
                "natural_instructions": {
                    "tasks_dir": str(ni / "tasks"),
                    "categories_csv": str(ni / "task_categories.csv"),
                }
            }
        },
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    configs = (MAIN_CONFIG, NI_EXAMPLE_CONFIG, TINY_NI_CONFIG, paths)
    run_ok(workdir, configs=configs)

    categories = pd.read_csv(ni / "task_categories.csv")
    tasks_per_category = categories.groupby("ni_category").size()
    assert len(tasks_per_category) == 8
    manifest = json.loads((workdir / "results/slices/manifest.json").read_text())
    names = [skill["name"] for skill in manifest["skills"]]
    assert sorted(names) == sorted(tasks_per_category.index)
    per_task = block["max_per_task"]
    val, test = example["split"]["val"], example["split"]["test"]
    for skill in manifest["skills"]:
        counts = skill["counts"]
        assert counts["val"] == val and counts["test"] == test, skill
        total = sum(counts.values())
        # Every task of the subset has at least max_per_task instances.
        assert total == per_task * tasks_per_category[skill["name"]], skill
        assert counts["train"] > 0
    for run in yaml.safe_load(TINY_NI_CONFIG.read_text())["train"]["strategies"]:
        metrics = pd.read_parquet(workdir / "results/eval" / run / "metrics.parquet")
        assert sorted(set(metrics["skill"])) == sorted(names)
        assert all(math.isfinite(loss) for loss in metrics["loss"])


def test_ni_example_config_is_a_complete_override(tmp_path):
    """examples/ni/config.yaml validates on top of config.yaml and leaves every skill training data."""
    example = yaml.safe_load(NI_EXAMPLE_CONFIG.read_text())
    assert example["source"]["kind"] == "natural_instructions"
    assert example["model"]["max_length"] <= example["model"]["tiny"]["max_positions"]
    # The smallest categories of the subset hold a single task, i.e. max_per_task examples.
    per_task = example["source"]["natural_instructions"]["max_per_task"]
    assert example["split"]["val"] + example["split"]["test"] < per_task
    result = run_ok(tmp_path, "-n", configs=(MAIN_CONFIG, NI_EXAMPLE_CONFIG))
    assert job_stats(result.output) == FULL_DAG, result.describe()
