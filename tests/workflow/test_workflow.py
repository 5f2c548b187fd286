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

import numpy as np
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

METRICS_COLUMNS = ["run", "split", "step", "skill", "loss", "accuracy", "exact", "n"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_GRAPH_RUNS = 6  # brute force on 3 skills: 3 singles + 3 pairs
FULL_DAG = {
    "slice": 1,
    "graph_run": N_GRAPH_RUNS,
    "graph_assemble": 1,
    "train": 3,
    "evaluate": 3,
    "compare": 1,
    "all": 1,
}
# The graph runs depend on the skills, known only once the slice checkpoint has run.
BEFORE_CHECKPOINT = {rule: n for rule, n in FULL_DAG.items() if rule != "graph_run"}


def test_tiny_config_values_are_what_the_tests_assume():
    """The numbers below are derived from tiny.yaml; make sure they describe a tiny run."""
    assert (N_SKILLS, EXAMPLES_PER_SKILL, N_VAL, N_TEST) == (3, 60, 10, 10)
    assert RUNS == ["random", "stratified", "skillit"]
    assert VAL_STEPS == [0, 6, 12]
    assert TINY["model"]["max_length"] <= TINY["model"]["tiny"]["max_positions"]


# --------------------------------------------------------------------------- dry run


def test_dry_run_plans_every_job_before_the_checkpoint(tmp_path):
    result = run_ok(tmp_path, "-n")
    assert job_stats(result.output) == BEFORE_CHECKPOINT, result.describe()
    jobs = planned_jobs(result.output)
    assert sorted(job.wildcards for job in jobs if job.rule == "train") == sorted(f"run={r}" for r in RUNS)
    assert sorted(job.wildcards for job in jobs if job.rule == "evaluate") == sorted(f"run={r}" for r in RUNS)
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
        text = (tiny_run / f"logs/train/{run}.log").read_text()
        assert f"step {STEPS}: mean val loss" in text
        assert "train: 100%|" in text and f"{STEPS}/{STEPS}" in text  # tqdm's progress bar, in the log
    benchmarks = ["slice/slice.tsv"] + [f"{rule}/{run}.tsv" for rule in ("train", "evaluate") for run in RUNS]
    for name in benchmarks:
        path = tiny_run / "benchmarks" / name
        assert path.is_file(), path
        header, values = path.read_text().splitlines()[:2]
        assert header.split("\t")[0] == "s"
        assert float(values.split("\t")[0]) > 0


def test_no_checkpoints_left_after_success(tiny_run):
    for run in RUNS:
        directory = tiny_run / "results/resume/train" / run
        assert not directory.exists() or not any(directory.iterdir()), directory


def test_second_dry_run_has_nothing_to_do(tiny_run):
    result = run_ok(tiny_run, "-n")
    assert "Nothing to be done" in result.output, result.describe()
    assert job_stats(result.output) == {}


def test_training_param_change_reruns_train_and_evaluate_only(tiny_run, tmp_path):
    override = write_yaml(tmp_path / "lr.yaml", {"train": {"lr": 0.002}})
    result = run_ok(tiny_run, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    assert job_stats(result.output) == {"train": 3, "evaluate": 3, "compare": 1, "all": 1}, result.describe()
    train_reasons = reasons_of(result.output, "train")
    assert len(train_reasons) == 3
    for reason in train_reasons:
        assert "Params have changed since last execution" in reason, reason
        assert "'lr': 0.003" in reason and "'lr': 0.002" in reason, reason
    evaluate_reasons = reasons_of(result.output, "evaluate")
    assert len(evaluate_reasons) == 3
    for reason in evaluate_reasons:
        assert reason.startswith("Input files updated by another job"), reason
        assert "Params have changed" not in reason, reason


def test_dropping_a_strategy_retrains_nothing(tiny_run, tmp_path):
    """Only the comparison, whose set of inputs changed, is redone."""
    override = write_yaml(tmp_path / "one.yaml", {"train": {"strategies": RUNS[:2]}})
    result = run_ok(tiny_run, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    assert job_stats(result.output) == {"compare": 1, "all": 1}, result.describe()


def test_split_seed_change_reruns_slice_and_everything_after(tiny_run, tmp_path):
    override = write_yaml(tmp_path / "seed.yaml", {"split": {"seed": 1}})
    result = run_ok(tiny_run, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    # The slice checkpoint must run again before the graph runs are planned.
    assert job_stats(result.output) == BEFORE_CHECKPOINT, result.describe()
    (slice_reason,) = reasons_of(result.output, "slice")
    assert "Params have changed since last execution" in slice_reason, slice_reason
    assert "'seed': 0" in slice_reason and "'seed': 1" in slice_reason
    train_reasons = reasons_of(result.output, "train")
    assert len(train_reasons) == 3
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
        ({"train": {"lrr": 1}}, ["config train: unknown key(s) ['lrr']; expected keys from", "'lr'"]),
        ({"train": {"steps": "many"}}, ["config train.steps: 'many' is not of type 'integer'"]),
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
    assert "SkillmixInputError" in result.output, result.describe()
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
        # val and test hold `val`/`test` distinct examples; a copy of one of them (NI repeats some
        # instances) stays beside it, so a split may hold a row more, never an example of train
        for split, want in (("val", val), ("test", test)):
            rows = pd.read_parquet(workdir / f"results/slices/{split}/{skill['slug']}.parquet")
            assert (
                len(rows.drop_duplicates(["prompt", "answer", "text"]))
                == want
                == counts[split] - (len(rows) - len(rows.drop_duplicates(["prompt", "answer", "text"])))
            ), (split, skill)
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
    data = shared_data_dir()
    if data is None or not (data / "ni_task_subset").is_dir():
        pytest.skip("NI subset not found: set SKILLMIX_SHARED_DATA to the folder holding ni_task_subset/")
    # its relative paths (../shared/data/...) are meant for a run beside the shared folder, and the
    # task files are checked when the workflow is parsed
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data, target_is_directory=True)
    result = run_ok(work, "-n", configs=(MAIN_CONFIG, NI_EXAMPLE_CONFIG))
    assert job_stats(result.output) == BEFORE_CHECKPOINT, result.describe()
    missing = snakemake(tmp_path, "-n", configs=(MAIN_CONFIG, NI_EXAMPLE_CONFIG))
    assert missing.returncode != 0 and "source.natural_instructions.tasks_dir: folder" in missing.output


# --------------------------------------------------------------------------- skills graph and Skill-It


def test_graph_outputs_of_the_tiny_run(tiny_run, tiny_manifest):
    names = [skill["name"] for skill in tiny_manifest["skills"]]
    slugs = [skill["slug"] for skill in tiny_manifest["skills"]]
    folder = tiny_run / "results/graph/brute_force"
    runs = sorted(path.stem for path in (folder / "runs").glob("*.parquet"))
    want = slugs + [f"{a}__{b}" for i, a in enumerate(slugs) for b in slugs[i + 1 :]]
    assert runs == sorted(want) and len(runs) == N_SKILLS + N_SKILLS * (N_SKILLS - 1) // 2
    A = np.load(folder / "adjacency.npy")
    assert A.shape == (N_SKILLS, N_SKILLS) and np.isfinite(A).all()
    np.testing.assert_array_equal(np.diag(A), np.ones(N_SKILLS))  # assemble.diagonal: 1.0
    assert json.loads((folder / "skills.json").read_text()) == {"rows": names, "columns": names}
    info = json.loads((folder / "graph.json").read_text())
    assert info["method"] == "brute_force" and info["options"]["normalise"] == "relative"
    raw = pd.read_parquet(folder / "raw.parquet")
    assert sorted(raw["unit"].unique()) == sorted(want)
    assert set(raw["step"]) == {0, 3, 6}
    assert (folder / "heatmap.png").read_bytes()[:8] == PNG_MAGIC
    # A[i, j] for i != j is L_j(after j alone) − L_j(after i ∪ j), relative to the first; each
    # loss is the mean over the unit's repeats
    curve = raw.groupby(["unit", "step", "skill"])["loss"].mean()
    i, j = 0, 1
    alone = curve[(slugs[j], 3, names[j])] / 2 + curve[(slugs[j], 6, names[j])] / 2
    pair = (
        curve[(f"{slugs[i]}__{slugs[j]}", 3, names[j])] / 2
        + curve[(f"{slugs[i]}__{slugs[j]}", 6, names[j])] / 2
    )
    assert A[i, j] == pytest.approx((alone - pair) / alone, rel=1e-9)


def test_skillit_mixture_of_the_tiny_run(tiny_run, tiny_manifest):
    names = [skill["name"] for skill in tiny_manifest["skills"]]
    mixture = pd.read_parquet(tiny_run / "results/train/skillit/mixture.parquet")
    assert list(mixture.columns) == ["round", "step", "skill", "weight"]
    update_steps = TINY["train"]["update_steps"]
    assert sorted(mixture["round"].unique()) == list(range(STEPS // update_steps))
    assert sorted(mixture["step"].unique()) == [1 + r * update_steps for r in range(STEPS // update_steps)]
    sums = mixture.groupby("round")["weight"].sum()
    np.testing.assert_allclose(sums, 1.0)
    # the first mixture is p1 ∝ exp(η · A · 1) from the learned graph
    A = np.load(tiny_run / "results/graph/brute_force/adjacency.npy")
    eta = yaml.safe_load(MAIN_CONFIG.read_text())["skillit"]["eta"]
    p1 = np.exp(eta * A.sum(1))
    first = mixture[mixture["round"] == 0].set_index("skill").loc[names, "weight"].to_numpy()
    np.testing.assert_allclose(first, p1 / p1.sum(), rtol=1e-9)
    # the skill counts of the first round follow it (floor of p · n, the last skill the rest)
    counts = pd.read_parquet(tiny_run / "results/train/skillit/skill_counts.parquet")
    first_round = counts[counts["step"] <= update_steps].groupby("skill")["count"].sum()
    n = update_steps * BATCH
    want = np.floor(first * n).astype(int)
    want[-1] = n - want[:-1].sum()
    assert first_round.loc[names].tolist() == want.tolist()
    for run in RUNS:
        assert (tiny_run / "results/eval" / run / "mixture.png").read_bytes()[:8] == PNG_MAGIC
    summary = pd.read_parquet(tiny_run / "results/eval/summary.parquet")
    assert sorted(summary["run"].unique()) == sorted(RUNS)
    assert (tiny_run / "results/eval/comparison.png").read_bytes()[:8] == PNG_MAGIC


def test_graph_units_are_trained_repeats_times_from_one_initial_model(tiny_run):
    """graph.runs.repeats (2 in the tiny config): every unit's curve holds both repeats, with the same
    losses before training (one initial model) and other ones after (another batch order)."""
    raw = pd.read_parquet(tiny_run / "results/graph/brute_force/raw.parquet")
    assert list(raw.columns) == ["unit", "repeat", "step", "skill", "loss"]
    for unit, rows in raw.groupby("unit"):
        assert sorted(rows["repeat"].unique()) == [0, 1], unit
        wide = rows.pivot_table(index=["step", "skill"], columns="repeat", values="loss")
        before, after = wide.loc[0], wide.drop(index=0, level="step")
        assert np.array_equal(before[0].to_numpy(), before[1].to_numpy()), unit
        assert not np.allclose(after[0].to_numpy(), after[1].to_numpy()), unit


def _merged(*paths: Path) -> dict:
    """Config files merged as Snakemake merges --configfile options (its own update_config)."""
    from snakemake.utils import update_config

    config: dict = {}
    for path in paths:
        update_config(config, yaml.safe_load(path.read_text()))
    return config


def test_repeat_init_new_starts_each_repeat_from_its_own_initialisation(tiny_run):
    """graph.runs.repeat_init: new: repeat 0 is the configured model's run (the same curve as the
    workflow's, bit for bit), repeat 1 starts from another initialisation (other losses at step 0)."""
    import torch

    from skillmix.data.sources import resolve_tiny_tokenizer
    from skillmix.graph.unit_runs import graph_unit_curve

    config = _merged(MAIN_CONFIG, TINY_CONFIG)
    config["model"]["tiny"] = resolve_tiny_tokenizer(config["model"], config["source"])  # as the rules
    slices = tiny_run / "results/slices"
    manifest = json.loads((slices / "manifest.json").read_text())
    slug = manifest["skills"][0]["slug"]
    threads = torch.get_num_threads()
    torch.set_num_threads(config["resources"]["graph_run"]["threads"])  # as the job runs: bit for bit
    try:
        curve = graph_unit_curve(
            slug,
            slices / "manifest.json",
            [slices / "train" / f"{slug}.parquet"],
            slices / "val",
            model_cfg=config["model"],
            runs_cfg={**config["graph"]["runs"], "repeat_init": "new"},
            eval_cfg=config["eval"],
            source_cfg=config["source"],
        )
    finally:
        torch.set_num_threads(threads)
    raw = pd.read_parquet(tiny_run / "results/graph/brute_force/raw.parquet")
    same = raw[raw["unit"] == slug].sort_values(["repeat", "step", "skill"]).reset_index(drop=True)
    new = curve.sort_values(["repeat", "step", "skill"]).reset_index(drop=True)
    first = new["repeat"] == 0
    assert new[first]["loss"].tolist() == same[same["repeat"] == 0]["loss"].tolist()
    start_new = new[(new["repeat"] == 1) & (new["step"] == 0)]["loss"].to_numpy()
    start_same = same[(same["repeat"] == 1) & (same["step"] == 0)]["loss"].to_numpy()
    assert len(start_new) == len(start_same) > 0
    assert not np.allclose(start_new, start_same)


def test_repeat_init_new_draws_a_seed_for_models_built_from_config_only():
    from skillmix.graph.unit_runs import repeat_model

    config = _merged(MAIN_CONFIG, TINY_CONFIG)
    runs = {**config["graph"]["runs"], "repeat_init": "new"}
    assert repeat_model(config["model"], runs, 0) is config["model"]
    assert repeat_model(config["model"], runs, 2)["seed"] != config["model"]["seed"]
    assert repeat_model(config["model"], {**runs, "repeat_init": "same"}, 2) is config["model"]
    pretrained = {**config["model"], "kind": "pretrained", "name_or_path": "some/folder"}
    assert repeat_model(pretrained, runs, 1) is pretrained  # its one initialisation: its weights


def test_linear_graph_dag_has_one_run_per_skill(tiny_run, tmp_path):
    result = run_ok(tiny_run, "-n", "results/graph/linear/adjacency.npy")
    assert job_stats(result.output) == {"graph_run": N_SKILLS, "graph_assemble": 1}, result.describe()


def test_assembly_option_change_reruns_assembly_and_skillit_only(tiny_run, tmp_path):
    override = write_yaml(tmp_path / "t.yaml", {"graph": {"assemble": {"clip_negative": True}}})
    result = run_ok(tiny_run, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    stats = job_stats(result.output)
    assert stats == {"graph_assemble": 1, "train": 1, "evaluate": 1, "compare": 1, "all": 1}, (
        result.describe()
    )
    assert [job.wildcards for job in planned_jobs(result.output) if job.rule == "train"] == ["run=skillit"]


def test_skillit_setting_change_reruns_only_skillit(tiny_run, tmp_path):
    override = write_yaml(tmp_path / "eta.yaml", {"skillit": {"eta": 0.9}})
    result = run_ok(tiny_run, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    assert job_stats(result.output) == {"train": 1, "evaluate": 1, "compare": 1, "all": 1}, result.describe()


def test_given_graph_is_used_unaltered(tiny_run, tiny_manifest, tmp_path):
    names = [skill["name"] for skill in tiny_manifest["skills"]]
    matrix = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.25, 1.0]])
    np.save(tmp_path / "g.npy", matrix)
    (tmp_path / "g.txt").write_text("\n".join(reversed(names)) + "\n")
    override = write_yaml(
        tmp_path / "given.yaml",
        {
            "graph": {
                "method": "given",
                "given": {"adjacency": str(tmp_path / "g.npy"), "skills": str(tmp_path / "g.txt")},
            }
        },
    )
    result = run_ok(
        tiny_run, "results/graph/given/adjacency.npy", configs=(MAIN_CONFIG, TINY_CONFIG, override)
    )
    assert "graph_run" not in job_stats(result.output)
    A = np.load(tiny_run / "results/graph/given/adjacency.npy")
    np.testing.assert_array_equal(A, matrix[::-1, ::-1])  # reordered to the data's order, values as given
    assert json.loads((tiny_run / "results/graph/given/graph.json").read_text())["options"] is None
    (tmp_path / "bad.txt").write_text("lego-1\nlego-2\nnot-a-skill\n")
    bad = write_yaml(
        tmp_path / "bad.yaml",
        {
            "graph": {
                "method": "given",
                "given": {"adjacency": str(tmp_path / "g.npy"), "skills": str(tmp_path / "bad.txt")},
            }
        },
    )
    failed = snakemake(
        tiny_run, "results/graph/given/adjacency.npy", "-f", configs=(MAIN_CONFIG, TINY_CONFIG, bad)
    )
    assert failed.returncode != 0
    log = (tiny_run / "logs/graph_assemble/given.log").read_text()
    assert "lego-3" in log and "not-a-skill" in log, log


def test_target_only_without_targets_fails_before_any_job(tmp_path):
    override = write_yaml(tmp_path / "t.yaml", {"train": {"strategies": ["target_only"]}})
    result = snakemake(tmp_path, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    assert result.returncode != 0
    assert "train.target_skills" in result.output, result.describe()
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_fine_tuning_strategies_run_end_to_end(tmp_path):
    """Fine-tuning on lego-3 with lego-1..3: Skill-It on the target column, and every baseline."""
    strategies = ["target_only", "skillit", "curriculum", "anticurriculum", "skill_curriculum"]
    override = write_yaml(
        tmp_path / "ft.yaml",
        {"train": {"strategies": strategies, "target_skills": ["lego-3"]}, "curriculum": {"frac": 0.4}},
    )
    run_ok(tmp_path, configs=(MAIN_CONFIG, TINY_CONFIG, override))
    mixtures = {s: pd.read_parquet(tmp_path / "results/train" / s / "mixture.parquet") for s in strategies}
    target = mixtures["target_only"]
    assert set(target.loc[target["weight"] > 0, "skill"]) == {"lego-3"}
    # Skill-It's first mixture uses only the target column of the graph: p ∝ exp(η · A[:, lego-3])
    A = np.load(tmp_path / "results/graph/brute_force/adjacency.npy")
    eta = yaml.safe_load(MAIN_CONFIG.read_text())["skillit"]["eta"]
    first = mixtures["skillit"].query("round == 0")["weight"].to_numpy()
    np.testing.assert_allclose(first, np.exp(eta * A[:, 2]) / np.exp(eta * A[:, 2]).sum(), rtol=1e-9)
    stages = mixtures["skill_curriculum"]
    assert (stages.query("round == 0")["weight"].max()) == pytest.approx(1.0)  # stage 0: one skill alone
    summary = pd.read_parquet(tmp_path / "results/eval/summary.parquet")
    assert sorted(summary["run"].unique()) == sorted(strategies)


def test_curriculum_needs_a_pool_at_least_the_budget(tmp_path):
    """A curriculum draws every example once: a budget above the pool stops the slice job (before any
    training) with the keys."""
    override = write_yaml(tmp_path / "cur.yaml", {"train": {"strategies": ["curriculum"], "steps": 40}})
    result = snakemake(tmp_path, configs=(MAIN_CONFIG, TINY_CONFIG, override))
    assert result.returncode != 0, result.describe()
    log = (tmp_path / "logs/slice/slice.log").read_text()
    assert "train.steps × train.batch_size = 320 exceeds the 120 training examples" in log, log
    assert not (tmp_path / "logs/train").exists() and not (tmp_path / "results").exists()
