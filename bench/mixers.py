"""The data mixers side by side (issue 28, items 4a/4b): random, stratified, Skill-It, Aioli,
DoReMi, ODM and RegMix on one task, at the same budget, over seeds.

For every seed, runs the real workflow in its own folder with every seed of the config set to
that seed and `train.strategies` set to the seven strategies (each method at its defaults: the
config's own blocks, nothing tuned here). The task is the embedded default (`config.yaml`, XOR
skills) or `config.yaml` plus an override file (`--config`, e.g. examples/mixers/lego.yaml).
Writes a Markdown report and the raw numbers as JSON. Per strategy, mean ± sd over seeds:

- test accuracy and test loss at the end (mean over skills; `results/eval/{run}/metrics.parquet`);
- validation loss at the end: the mean over skills and the worst skill's (the largest per-skill
  loss at the last validation step);
- its extra cost, from `results/eval/costs.parquet`: extra runs, extra steps, extra evaluations,
  the wall time of the run (its train job) and of its stage jobs (DoReMi's proxy, RegMix's proxy
  runs). Skill-It's stage, the skills graph, is not in that table; its job count and job
  seconds are read from the workflow's benchmark files (`benchmarks/graph_run/<method>/*.tsv`);
- the mixture it trained on (share of the run's examples per skill, `results/eval/weights.parquet`).

**Beats stratified** is decided per metric with this rule, stated in the report: a method beats
(is worse than) stratified when the mean difference over seeds favours (disfavours) it by more
than 2 × the larger of the two standard deviations (sample sd, ddof 1); otherwise it is within
the seeds' spread. The paired differences (same seed: same data, split, initial model) are
reported beside it, with the count of seeds on which the method is better.

    python bench/mixers.py --seeds 0 1 2 --out bench/out/mixers_xor
    python bench/mixers.py --config examples/mixers/lego.yaml --seeds 0 1 2 --out bench/out/mixers_lego
    python bench/mixers.py --out bench/out/mixers_xor --report-only   # report from the folders

`--commit HEAD` (or any commit) runs the workflow of a `git archive` copy of that commit (its src/
first on PYTHONPATH) instead of the checkout, so that edits made to the checkout while the
benchmark runs do not reach it. The machine's load average is sampled while each seed runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ["random", "stratified", "skillit", "aioli", "doremi", "odm", "regmix"]
BASELINE = "stratified"
STAGE_JOBS = {  # the benchmark files of each method's own jobs (Skill-It: any graph method's)
    "skillit": [
        "benchmarks/graph_run/*/*.tsv",
        "benchmarks/graph_assemble/*.tsv",
        "benchmarks/graph_given/*.tsv",
    ],
    "doremi": ["benchmarks/doremi/*.tsv"],
    "regmix": ["benchmarks/regmix/*.tsv", "benchmarks/regmix/runs/*.tsv"],
}


def _snakemake(code: Path, workdir: Path, configs: list[Path], cores: int) -> tuple[float, list[float]]:
    """The workflow of `code` (a checkout; its src/ first on the path) in `workdir`: its wall seconds
    and the machine's 1-minute load average sampled every 15 s meanwhile (the cores are shared)."""
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(code / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores), "--quiet=all",
        "all", "--configfile", *map(str, configs),
    ]  # fmt: skip
    env = dict(os.environ)
    if code != REPO:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code / "src"), env.get("PYTHONPATH")]))
    loads: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(15.0):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    try:
        subprocess.run(command, check=True, env=env)
    finally:
        done.set()
    return time.perf_counter() - t0, loads


def snapshot(commit: str, root: Path) -> Path:
    """A copy of the repository at `commit` (git archive), so that the benchmark runs one version of
    the code while the checkout changes; reused when it exists."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", commit], check=True, capture_output=True, text=True
    ).stdout.strip()
    code = root / f"skillmix-{sha}"
    if not (code / "Snakefile").exists():
        code.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
    return code


def _merged(base: Path, override: Path | None) -> dict:
    """config.yaml with the override's keys on top."""
    config = yaml.safe_load(base.read_text())
    if override is not None:
        for key, value in (yaml.safe_load(override.read_text()) or {}).items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = deep_merge(config[key], value)
            else:
                config[key] = value
    return config


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = deep_merge(out[key], value) if nested else value
    return out


def _seed_config(workdir: Path, seed: int, base: Path, override: Path | None) -> Path:
    """seed.yaml: every seed of the config set to `seed`, the seven strategies; a given graph's
    paths (relative to the repository root in the example configs) made absolute, since the
    workflow runs in its own folder."""
    settings: dict = {
        "source": {"seed": seed},
        "split": {"seed": seed},
        "model": {"seed": seed},
        "graph": {"runs": {"seed": seed}},
        "train": {"seed": seed, "strategies": STRATEGIES},
    }
    given = (_merged(base, override).get("graph") or {}).get("given") or {}
    resolved = {
        k: str((REPO / v).resolve())
        for k, v in given.items()
        if isinstance(v, str) and not Path(v).is_absolute()
    }
    if resolved:
        settings["graph"]["given"] = resolved
    path = workdir / "seed.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def job_seconds(workdir: Path, pattern: str) -> tuple[int, float]:
    files = sorted(workdir.glob(pattern))
    return len(files), float(sum(pd.read_csv(f, sep="\t")["s"].sum() for f in files))


def _run_numbers(workdir: Path, run: str) -> dict:
    metrics = pd.read_parquet(workdir / f"results/eval/{run}/metrics.parquet")
    test = metrics[metrics["split"] == "test"]
    val = metrics[metrics["split"] == "val"]
    last = val[val["step"] == val["step"].max()].set_index("skill")
    return {
        "test_accuracy": float(test["accuracy"].mean()),
        "test_loss": float(test["loss"].mean()),
        "val_accuracy": float(last["accuracy"].mean()),
        "val_loss": float(last["loss"].mean()),
        "worst_val_loss": float(last["loss"].max()),
        "worst_skill": str(last["loss"].idxmax()),
        "val_step": int(val["step"].max()),
        "val_loss_by_skill": {str(k): float(v) for k, v in last["loss"].items()},
        "test_accuracy_by_skill": {
            str(k): float(v) for k, v in test.groupby("skill", sort=False)["accuracy"].mean().items()
        },
    }


def _graph_cost(folder: Path, config: dict, method: str, jobs: int) -> dict:
    """Skill-It's graph runs (brute_force, linear): runs, steps, examples and validation passes,
    counted from the graph's raw loss table (one row per unit, repeat, step, skill); nothing for a
    given graph or the gradient graph (no runs)."""
    raw = folder / f"results/graph/{method}/raw.parquet"
    cost = {"graph_method": method, "graph_jobs": jobs}
    if method not in ("brute_force", "linear") or not raw.exists():
        return {
            **cost,
            "extra_runs": 0.0,
            "extra_steps": 0.0,
            "extra_examples": 0.0,
            "extra_evaluations": 0.0,
        }
    table = pd.read_parquet(raw)
    runs = table.groupby(["unit", "repeat"]).ngroups if "repeat" in table else table["unit"].nunique()
    evaluations = table.groupby([c for c in ("unit", "repeat") if c in table])["step"].nunique().sum()
    steps = runs * int(config["graph"]["runs"]["steps"])
    return {
        **cost,
        "extra_runs": float(runs),
        "extra_steps": float(steps),
        "extra_examples": float(steps * int(config["graph"]["runs"]["batch_size"])),
        "extra_evaluations": float(evaluations),
    }


def collect(seed: int, out: Path, wall: float, load: list[float] | None = None) -> dict:
    """The numbers of one seed, read from its workflow folder."""
    folder = out / f"seed{seed}"
    costs = pd.read_parquet(folder / "results/eval/costs.parquet").set_index("run")
    weights = pd.read_parquet(folder / "results/eval/weights.parquet")
    config = yaml.safe_load((out / "config.yaml").read_text())
    method = config["graph"]["method"]
    graph_jobs, _ = job_seconds(folder, f"benchmarks/graph_run/{method}/*.tsv")
    runs = {}
    for run in STRATEGIES:
        row = costs.loc[run]
        cost = {c: (None if pd.isna(row[c]) else float(row[c])) for c in costs.columns}
        if run == "skillit":  # its stage is the graph, which the cost table does not hold
            cost.update(_graph_cost(folder, config, method, graph_jobs))
            cost["stage_wall_seconds"] = None  # graph runs write no training time
        cost["job_seconds"] = job_seconds(folder, f"benchmarks/train/{run}.tsv")[1]
        cost["stage_job_seconds"] = sum(job_seconds(folder, p)[1] for p in STAGE_JOBS.get(run, []))
        mix = weights[weights["run"] == run]
        runs[run] = {
            **_run_numbers(folder, run),
            "cost": cost,
            "mixture": {str(s): float(w) for s, w in zip(mix["skill"], mix["average"], strict=True)},
        }
    return {"seed": seed, "wall_seconds": wall, "load": load or [], "runs": runs}


def mean_sd(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def fmt(values: list[float], digits: int) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def verdict(method: list[float], base: list[float], higher_is_better: bool, factor: float = 2.0) -> dict:
    """The rule: better (worse) than the baseline when the mean difference favours (disfavours) the
    method by more than `factor` × the larger sd; plus the paired differences over seeds."""
    m, sm = mean_sd(method)
    b, sb = mean_sd(base)
    sign = 1.0 if higher_is_better else -1.0
    gain = sign * (m - b)
    spread = factor * max(sm, sb)
    paired = sign * (np.asarray(method) - np.asarray(base))
    if len(method) < 2:  # no spread to compare with
        call = "one seed"
    else:
        call = "better" if gain > spread else ("worse" if -gain > spread else "within")
    return {
        "gain": gain,
        "spread": spread,
        "call": call,
        "paired_mean": float(paired.mean()),
        "paired_sd": float(paired.std(ddof=1)) if len(paired) > 1 else 0.0,
        "better_seeds": int((paired > 0).sum()),
        "worse_seeds": int((paired < 0).sum()),
    }


METRICS = [  # key, label, digits, higher is better
    ("test_accuracy", "test accuracy", 3, True),
    ("val_loss", "mean val loss", 4, False),
    ("worst_val_loss", "worst-skill val loss", 4, False),
]


def verdicts(results: list[dict]) -> dict:
    out: dict = {}
    for run in STRATEGIES:
        if run == BASELINE:
            continue
        out[run] = {
            key: verdict(
                [r["runs"][run][key] for r in results], [r["runs"][BASELINE][key] for r in results], hib
            )
            for key, _, _, hib in METRICS
        }
    return out


def report(results: list[dict], config: dict, label: str) -> str:
    """The Markdown report of all seeds."""
    seeds = [r["seed"] for r in results]
    steps = config["train"]["steps"]
    val_step = results[0]["runs"][BASELINE]["val_step"]
    wall = [r["wall_seconds"] for r in results]
    lines = [
        f"Task: {label}. Seeds {seeds}; {steps} steps × {config['train']['batch_size']} for every "
        f"strategy. Wall time of the whole workflow per seed: "
        + ", ".join(f"{w:.0f} s" for w in wall)
        + f" (mean {np.mean(wall):.0f} s)"
        + (
            "; the 1-minute load average meanwhile (2 cores, shared): mean "
            + ", ".join(f"{np.mean(r['load']):.1f}" for r in results)
            + " per seed."
            if all(r.get("load") for r in results)
            else "."
        ),
        "",
        f"| strategy | test accuracy, step {steps} | test loss | mean val loss, step {val_step} "
        f"| worst-skill val loss, step {val_step} | worst skill (per seed) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in STRATEGIES:
        rows = [r["runs"][run] for r in results]
        lines.append(
            f"| {run} | {fmt([x['test_accuracy'] for x in rows], 3)} "
            f"| {fmt([x['test_loss'] for x in rows], 4)} "
            f"| {fmt([x['val_loss'] for x in rows], 4)} | {fmt([x['worst_val_loss'] for x in rows], 4)} "
            f"| {', '.join(x['worst_skill'] for x in rows)} |"
        )
    calls = verdicts(results)
    lines += [
        "",
        "Against stratified. Rule: a method **beats** stratified on a metric when its mean over seeds is "
        "better by more than 2 × the larger of the two sds (sample sd); **worse** when it is worse by "
        "that much; otherwise **within** the seeds' spread. Cells: verdict, mean gain over stratified "
        "(positive = better: accuracy up, loss down) / the 2 × sd threshold; paired over seeds "
        "(same seed = same data and initial model): seeds better : worse.",
        "",
        "| strategy | " + " | ".join(label for _, label, _, _ in METRICS) + " |",
        "| --- |" + " --- |" * len(METRICS),
    ]
    for run, per in calls.items():
        cells = []
        for key, _, digits, _ in METRICS:
            v = per[key]
            cells.append(
                f"{v['call']} ({v['gain']:+.{digits}f} / {v['spread']:.{digits}f}; "
                f"{v['better_seeds']}:{v['worse_seeds']})"
            )
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Extra cost (mean over seeds; from results/eval/costs.parquet, except Skill-It's, whose graph "
        "runs the cost table does not hold: counted from the graph's raw loss table). Run wall and "
        "stage wall are costs.parquet's: the training time of the run and of the method's own jobs "
        "(DoReMi's proxy, RegMix's proxy runs; Skill-It's graph runs record none, –). Job seconds "
        "are the workflow's benchmark files (process start, loading and writing included) of the "
        "run's train job and of the method's own jobs summed (Skill-It: graph runs and assembly; "
        "RegMix: sampling, proxy runs, fit); the workflow runs two jobs at a time on 2 cores. "
        "DoReMi's reference is the `random` run, reused: its steps are counted in extra steps, its "
        "time is the random row's.",
        "",
        "| strategy | extra runs | extra steps | extra evaluations | run wall (s) | stage wall (s) "
        "| run job (s) | stage jobs (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in STRATEGIES:
        costs = [r["runs"][run]["cost"] for r in results]

        def mean(key: str, costs: list[dict] = costs) -> str:
            values = [c.get(key) for c in costs]
            if any(v is None for v in values):
                return "–"
            return f"{np.mean(values):.1f}" if "wall" in key else f"{np.mean(values):.0f}"

        runs_cell = mean("extra_runs")
        if run == "skillit":
            runs_cell += (
                f" ({costs[0]['graph_method']} graph, {np.mean([c['graph_jobs'] for c in costs]):.0f} jobs)"
            )
        lines.append(
            f"| {run} | {runs_cell} | {mean('extra_steps')} | {mean('extra_evaluations')} "
            f"| {mean('wall_seconds')} | {mean('stage_wall_seconds')} "
            f"| {mean('job_seconds')} | {mean('stage_job_seconds')} |"
        )
    skills = list(results[0]["runs"][BASELINE]["mixture"])
    lines += [
        "",
        "Mixture trained on (share of the run's examples per skill, mean over seeds):",
        "",
        "| strategy | " + " | ".join(skills) + " |",
        "| --- |" + " --- |" * len(skills),
    ]
    for run in STRATEGIES:
        shares = [np.mean([r["runs"][run]["mixture"][s] for r in results]) for s in skills]
        lines.append(f"| {run} | " + " | ".join(f"{x:.3f}" for x in shares) + " |")
    lines += [
        "",
        f"Per-skill validation loss at step {val_step} (mean over seeds):",
        "",
        "| strategy | " + " | ".join(skills) + " |",
        "| --- |" + " --- |" * len(skills),
    ]
    for run in STRATEGIES:
        losses = [np.mean([r["runs"][run]["val_loss_by_skill"][s] for r in results]) for s in skills]
        lines.append(f"| {run} | " + " | ".join(f"{x:.4f}" for x in losses) + " |")
    lines += [
        "",
        "Test accuracy per seed:",
        "",
        "| strategy | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "| --- |" + " --- |" * len(seeds),
    ]
    for run in STRATEGIES:
        lines.append(
            f"| {run} | " + " | ".join(f"{r['runs'][run]['test_accuracy']:.3f}" for r in results) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=None, help="override file on top of config.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "bench/out/mixers_xor")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the seed folders")
    parser.add_argument(
        "--commit",
        default=None,
        help="run the workflow of this commit (a git-archive copy under --code-root) instead of the "
        "checkout, which others may be editing; default: the checkout as it is",
    )
    parser.add_argument("--code-root", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    override = args.config.resolve() if args.config else None
    if args.report_only:
        saved = json.loads((out / "results.json").read_text())
        label = saved["label"]
        results = [collect(r["seed"], out, r["wall_seconds"], r.get("load")) for r in saved["seeds"]]
    else:
        label = str(override.relative_to(REPO)) if override else "config.yaml (XOR default)"
        code = snapshot(args.commit, args.code_root.resolve()) if args.commit else REPO
        if code != REPO:
            label += f", code of commit {code.name.removeprefix('skillmix-')}"
        base = code / "config.yaml"
        (out / "config.yaml").write_text(yaml.safe_dump(_merged(base, override)))
        results = []
        for seed in args.seeds:
            folder = out / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            configs = [base, *([override] if override else []), _seed_config(folder, seed, base, override)]
            wall, load = _snakemake(code, folder, configs, args.cores)
            print(f"seed {seed}: {wall:.0f} s", flush=True)
            results.append(collect(seed, out, wall, load))
            (out / "results.json").write_text(
                json.dumps({"label": label, "seeds": results, "verdicts": verdicts(results)}, indent=1)
            )
    config = yaml.safe_load((out / "config.yaml").read_text())
    text = report(results, config, label)
    (out / "results.json").write_text(
        json.dumps({"label": label, "seeds": results, "verdicts": verdicts(results)}, indent=1)
    )
    (out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
