"""Data mixers on real text (issue 28, item 4c): random (the natural mixture), stratified, Skill-It,
Aioli, DoReMi, ODM and RegMix on ten groups built from ../shared/data, over seeds.

The data: `examples/mixing_text/build_table.py` writes a table (skill, prompt, answer) outside
the repository (default /tmp/mixing_text/table.jsonl; built here when missing): the eight
Natural-Instructions categories of ni_task_subset, GSM8K (train) and SST-2 (train), each 10% of
its full size, so the natural mixture follows the real, unequal sizes. The setting is
`config.yaml` + `examples/mixing_text/config.yaml` (tiny Llama from scratch, bytes).

For every seed, runs the real workflow in its own folder with every seed of the config set to
that seed (split, model initialisation, graph runs, training, RegMix sampling) and the table's
path made absolute. Per strategy, from `results/eval/<run>/metrics.parquet` (test split, final
step) — the Aioli paper's metric, the mean over groups of the held-out per-group loss, and the
worst group's loss — plus mean accuracy (greedy, exact match for multi-character answers), the
validation loss at the last step (what settings were chosen on), the extra cost
(`results/eval/costs.parquet`; Skill-It's graph jobs from `benchmarks/graph_run/`) and the mixture
trained on (`results/eval/weights.parquet`).

**Beats stratified**: the mean over seeds is better by more than 2 × the larger of the two sample
sds (ddof 1); **worse** when worse by that much; else **within** the seeds' spread (the rule of
bench/mixers.py). The paired differences (same seed: same split and initial model) are given
beside it. **The mixture matters** when random and stratified differ on the mean-group test loss
by more than 3 × the larger sd.

    python bench/mixing_real_text.py --seeds 0 1 2 --cores 2 --out bench/out/mixing_text
    python bench/mixing_real_text.py --seeds 2 --keep --out bench/out/mixing_text   # add a seed
    python bench/mixing_real_text.py --out bench/out/mixing_text --report-only
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from mixers import deep_merge, fmt, job_seconds, verdict  # bench/, beside this script

REPO = Path(__file__).resolve().parents[1]
OVERRIDE = REPO / "examples/mixing_text/config.yaml"
BUILD = REPO / "examples/mixing_text/build_table.py"
STRATEGIES = ["random", "stratified", "skillit", "aioli", "doremi", "odm", "regmix"]
BASELINE = "stratified"
METRICS = [  # key, label, digits, higher is better
    ("test_loss", "mean-group test loss", 4, False),
    ("worst_test_loss", "worst-group test loss", 4, False),
    ("test_accuracy", "mean test accuracy", 3, True),
    ("val_loss", "mean-group val loss (last step)", 4, False),
]


def merged(configs: list[Path]) -> dict:
    config: dict = {}
    for path in configs:
        config = deep_merge(config, yaml.safe_load(path.read_text()) or {})
    return config


def seed_config(
    folder: Path, seed: int, table: Path, strategies: list[str], split_seed: int | None = None
) -> Path:
    settings = {
        "source": {"seed": seed, "table": {"path": str(table)}},
        "split": {"seed": seed if split_seed is None else split_seed},
        "model": {"seed": seed},
        "graph": {"runs": {"seed": seed}},
        "train": {"seed": seed, "strategies": strategies},
    }
    path = folder / "seed.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def run_seed(folder: Path, configs: list[Path], cores: int) -> float:
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(folder), "--cores", str(cores), "--quiet=all",
        "all", "--configfile", *map(str, configs),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - t0


def run_numbers(folder: Path, run: str) -> dict:
    metrics = pd.read_parquet(folder / f"results/eval/{run}/metrics.parquet")
    test = metrics[metrics["split"] == "test"]
    test = test[test["step"] == test["step"].max()].set_index("skill")
    val = metrics[metrics["split"] == "val"]
    last = val[val["step"] == val["step"].max()].set_index("skill")
    return {
        "test_step": int(test["step"].iloc[0]),
        "test_loss": float(test["loss"].mean()),
        "worst_test_loss": float(test["loss"].max()),
        "worst_group": str(test["loss"].idxmax()),
        "test_accuracy": float(test["accuracy"].mean()),
        "val_step": int(val["step"].max()),
        "val_loss": float(last["loss"].mean()),
        "worst_val_loss": float(last["loss"].max()),
        "test_loss_by_group": {str(k): float(v) for k, v in test["loss"].items()},
        "test_accuracy_by_group": {str(k): float(v) for k, v in test["accuracy"].items()},
    }


def collect(folder: Path, seed: int, wall: float, strategies: list[str], graph_method: str) -> dict:
    costs = pd.read_parquet(folder / "results/eval/costs.parquet").set_index("run")
    weights = pd.read_parquet(folder / "results/eval/weights.parquet")
    graph_jobs, graph_seconds = job_seconds(folder, f"benchmarks/graph_run/{graph_method}/*.tsv")
    _, assemble_seconds = job_seconds(folder, f"benchmarks/graph_assemble/{graph_method}.tsv")
    runs = {}
    for run in strategies:
        row = costs.loc[run]
        cost = {c: (None if pd.isna(row[c]) else float(row[c])) for c in costs.columns}
        if run == "skillit":  # its stage, the graph, is not in the cost table
            cost.update(graph_jobs=graph_jobs, stage_wall_seconds=graph_seconds + assemble_seconds)
        mix = weights[weights["run"] == run]
        runs[run] = {
            **run_numbers(folder, run),
            "cost": cost,
            "mixture": {str(s): float(w) for s, w in zip(mix["skill"], mix["average"], strict=True)},
        }
    return {"seed": seed, "wall_seconds": wall, "runs": runs}


def verdicts(results: list[dict], strategies: list[str]) -> dict:
    return {
        run: {
            key: verdict(
                [r["runs"][run][key] for r in results], [r["runs"][BASELINE][key] for r in results], hib
            )
            for key, _, _, hib in METRICS
        }
        for run in strategies
        if run != BASELINE
    }


def report(results: list[dict], config: dict, sizes: dict | None, strategies: list[str]) -> str:
    seeds = [r["seed"] for r in results]
    t = config["train"]
    walls = [r["wall_seconds"] for r in results]
    step = results[0]["runs"][BASELINE]["test_step"]
    lines = [
        f"Seeds {seeds}; {t['steps']} steps × {t['batch_size']} examples for every strategy "
        f"(rounds of {t['update_steps']}). Whole workflow per seed: "
        + ", ".join(f"{w:.0f} s" for w in walls)
        + f" (mean {np.mean(walls):.0f} s).",
        "",
    ]
    if sizes:
        groups = sizes["groups"]
        lines += [
            "Groups (rows in the table; train = rows − 100; share = the natural mixture):",
            "",
            "| group | full size | kept | share |",
            "| --- | ---: | ---: | ---: |",
            *(f"| {g} | {v['full']} | {v['kept']} | {v['share']:.3f} |" for g, v in groups.items()),
            "",
        ]
    lines += [
        f"| strategy | mean-group test loss | worst-group test loss | worst group (per seed) "
        f"| mean test accuracy | mean-group val loss, step {results[0]['runs'][BASELINE]['val_step']} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in strategies:
        rows = [r["runs"][run] for r in results]
        lines.append(
            f"| {run} | {fmt([x['test_loss'] for x in rows], 4)} "
            f"| {fmt([x['worst_test_loss'] for x in rows], 4)} "
            f"| {', '.join(x['worst_group'] for x in rows)} | {fmt([x['test_accuracy'] for x in rows], 3)} "
            f"| {fmt([x['val_loss'] for x in rows], 4)} |"
        )
    if "random" in strategies:
        nat = verdict(
            [r["runs"]["random"]["test_loss"] for r in results],
            [r["runs"][BASELINE]["test_loss"] for r in results],
            False,
            factor=3.0,
        )
        lines += [
            "",
            f"Does the mixture matter? random − stratified on the mean-group test loss: "
            f"{-nat['gain']:+.4f}; 3 × the larger sd: {nat['spread']:.4f} → "
            + ("yes, by more than 3 sd" if abs(nat["gain"]) > nat["spread"] else "no, within 3 sd")
            + f" (stratified lower on {nat['worse_seeds']} of {len(seeds)} seeds).",
        ]
    lines += [
        "",
        "Against stratified: **better** / **worse** when the mean over seeds differs by more than 2 × the "
        "larger of the two sds, else **within**. Cells: verdict (gain over stratified, positive = better "
        "/ threshold; seeds better : worse, paired).",
        "",
        "| strategy | " + " | ".join(label for _, label, _, _ in METRICS) + " |",
        "| --- |" + " --- |" * len(METRICS),
    ]
    for run, per in verdicts(results, strategies).items():
        cells = [
            f"{per[k]['call']} ({per[k]['gain']:+.{d}f} / {per[k]['spread']:.{d}f}; "
            f"{per[k]['better_seeds']}:{per[k]['worse_seeds']})"
            for k, _, d, _ in METRICS
        ]
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Extra cost (mean over seeds; results/eval/costs.parquet): runs, steps and validation passes "
        "spent outside the evaluated run (DoReMi's reference is the `random` run, reused; its steps "
        "are counted), the train job's wall time and the method's own stage jobs' (DoReMi's proxy, "
        "RegMix's proxy runs summed, Skill-It's graph runs and assembly).",
        "",
        "| strategy | extra runs | extra steps | extra evaluations | run wall (s) | stage wall (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in strategies:
        costs = [r["runs"][run]["cost"] for r in results]

        def mean(key: str, costs: list[dict] = costs) -> str:
            values = [c.get(key) for c in costs]
            return "–" if any(v is None for v in values) else f"{np.mean(values):.0f}"

        runs_cell = mean("extra_runs")
        if run == "skillit":
            runs_cell = (
                f"{np.mean([c['graph_jobs'] for c in costs]):.0f} graph runs ({config['graph']['method']})"
            )
        lines.append(
            f"| {run} | {runs_cell} | {mean('extra_steps')} | {mean('extra_evaluations')} "
            f"| {mean('wall_seconds')} | {mean('stage_wall_seconds')} |"
        )
    groups = list(results[0]["runs"][BASELINE]["test_loss_by_group"])
    lines += [
        "",
        "Mixture trained on (share of the run's examples per group, mean over seeds):",
        "",
        "| strategy | " + " | ".join(groups) + " |",
        "| --- |" + " --- |" * len(groups),
    ]
    for run in strategies:
        shares = [np.mean([r["runs"][run]["mixture"].get(g, 0.0) for r in results]) for g in groups]
        lines.append(f"| {run} | " + " | ".join(f"{x:.3f}" for x in shares) + " |")
    lines += [
        "",
        f"Per-group test loss at step {step} (mean over seeds):",
        "",
        "| strategy | " + " | ".join(groups) + " |",
        "| --- |" + " --- |" * len(groups),
    ]
    for run in strategies:
        losses = [np.mean([r["runs"][run]["test_loss_by_group"][g] for r in results]) for g in groups]
        lines.append(f"| {run} | " + " | ".join(f"{x:.3f}" for x in losses) + " |")
    lines += [
        "",
        "Mean-group test loss per seed:",
        "",
        "| strategy | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "| --- |" + " --- |" * len(seeds),
    ]
    for run in strategies:
        lines.append(f"| {run} | " + " | ".join(f"{r['runs'][run]['test_loss']:.4f}" for r in results) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "bench/out/mixing_text")
    parser.add_argument(
        "--table-dir",
        type=Path,
        default=Path("/tmp/mixing_text"),
        help="where the table is (built when missing)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        nargs="*",
        default=[],
        help="further overrides after examples/mixing_text/config.yaml",
    )
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="hold the split (validation and test rows) at this seed for every seed; default: the seed",
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the seed folders")
    parser.add_argument("--keep", action="store_true", help="keep the other seeds already in results.json")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    table_dir = args.table_dir.resolve()
    table = table_dir / "table.jsonl"
    if not table.exists() and not args.report_only:
        subprocess.run([sys.executable, str(BUILD), "--out", str(table_dir)], check=True)
    sizes_path = table_dir / "sizes.json"
    configs = [REPO / "config.yaml", OVERRIDE, *(p.resolve() for p in args.config)]
    if args.report_only:
        saved = json.loads((out / "results.json").read_text())
        config, strategies = saved["config"], saved["strategies"]
        sizes = saved.get("sizes")
        results = [
            collect(
                out / f"seed{r['seed']}", r["seed"], r["wall_seconds"], strategies, config["graph"]["method"]
            )
            for r in saved["seeds"]
        ]
    else:
        config, strategies = merged(configs), args.strategies
        sizes = json.loads(sizes_path.read_text()) if sizes_path.exists() else None
        results = []
        for seed in args.seeds:
            folder = out / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            wall = run_seed(folder, [*configs, seed_config(folder, seed, table, strategies, args.split_seed)], args.cores)
            print(f"seed {seed}: {wall:.0f} s", flush=True)
            results.append(collect(folder, seed, wall, strategies, config["graph"]["method"]))
            if args.keep and (out / "results.json").exists():  # seeds of other calls, read when saving
                ran = {r["seed"] for r in results}
                results += [
                    r for r in json.loads((out / "results.json").read_text())["seeds"] if r["seed"] not in ran
                ]
            results.sort(key=lambda r: r["seed"])
            saved = {"config": config, "strategies": strategies, "sizes": sizes, "seeds": results}
            saved["split_seed"] = args.split_seed
            (out / "results.json").write_text(json.dumps(saved, indent=1))
    text = report(results, config, sizes, strategies)
    machine = (
        f"{platform.machine()}, {platform.processor() or platform.node()}, python {platform.python_version()}"
    )
    saved = {
        "config": config,
        "strategies": strategies,
        "sizes": sizes,
        "seeds": results,
        "split_seed": args.split_seed if not args.report_only else saved.get("split_seed"),
        "verdicts": verdicts(results, strategies),
        "date": str(date.today()),
        "machine": machine,
    }
    (out / "results.json").write_text(json.dumps(saved, indent=1))
    (out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
