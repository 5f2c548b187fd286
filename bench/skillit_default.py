"""Skill-It on the embedded default (XOR skills, issue 11): graphs against the known graph, and
the paper's Table-5 strategies.

For every seed, runs the real workflow in its own folder with every seed of the config set to
that seed: the brute-force, linear and gradient skills graphs, and random, stratified,
curriculum, anticurriculum, skill-curriculum and Skill-It at equal steps; skill-anticurriculum
(skill_curriculum with curriculum.reverse) runs in a second folder. Writes a Markdown report and
the raw numbers as JSON:

- per strategy: test accuracy at the end, validation accuracy halfway (the validation curve
  at train.steps / 2; val and test come from the same distribution), mean test loss; mean ± sd
  over seeds;
- per graph method: off-diagonal edge precision / recall / F1 against the known graph
  (`skillmix.data.sources.xor.xor_ground_truth`; an edge is an entry > 0; the linear and gradient
  graphs are assembled as relative loss changes, the brute-force one by steps to target), Spearman of the
  off-diagonal entries against the known graph and against brute force, and job seconds.

    python bench/skillit_default.py --seeds 0 1 2 --out bench/out/xor
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from graph_agreement import edge_agreement, graph_agreement  # bench/, beside this script

from skillmix.data.sources.xor import xor_ground_truth
from skillmix.infra.config import complete

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ["random", "curriculum", "anticurriculum", "stratified", "skill_curriculum", "skillit"]
ROWS = [*STRATEGIES[:5], "skill_anticurriculum", "skillit"]
METHODS = ["brute_force", "linear", "gradient"]


def _snakemake(workdir: Path, configs: list[Path], targets: list[str], cores: int) -> float:
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores), "--quiet=all",
        *targets, "--configfile", *map(str, configs),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - t0


def _seed_config(workdir: Path, seed: int, extra: dict) -> Path:
    path = workdir / "seed.yaml"
    settings = {
        "source": {"seed": seed},
        "split": {"seed": seed},
        "model": {"seed": seed},
        "graph": {"runs": {"seed": seed}},
        "train": {"seed": seed},
    }
    for key, value in extra.items():
        settings[key] = {**settings.get(key, {}), **value}
    path.write_text(yaml.safe_dump(settings))
    return path


def _strategy_numbers(workdir: Path, run: str, half: int) -> dict:
    metrics = pd.read_parquet(workdir / f"results/eval/{run}/metrics.parquet")
    test = metrics[metrics["split"] == "test"]
    val = metrics[metrics["split"] == "val"]
    return {
        "accuracy": float(test["accuracy"].mean()),
        "exact": float(test["exact"].mean()),
        "loss": float(test["loss"].mean()),
        "half_accuracy": float(val[val["step"] == half]["accuracy"].mean()),
        "half_loss": float(val[val["step"] == half]["loss"].mean()),
    }


def learned_at(workdir: Path, run: str, level: float = 0.95) -> dict[str, float]:
    """The first validation step at which each skill's accuracy reaches `level` (nan if never)."""
    metrics = pd.read_parquet(workdir / f"results/eval/{run}/metrics.parquet")
    val = metrics[metrics["split"] == "val"]
    out = {}
    for skill, rows in val.groupby("skill", sort=False):
        hit = rows[rows["accuracy"] >= level]["step"]
        out[str(skill)] = float(hit.min()) if len(hit) else float("nan")
    return out


def pair_steps(workdir: Path, target: float) -> dict[str, dict[str, float]]:
    """For every skill j: the first evaluated step at which each brute-force run that trains on j
    (alone, or with another skill i) reaches `target` loss on j; keyed by j, then by i (j: alone)."""
    raw = pd.read_parquet(workdir / "results/graph/brute_force/raw.parquet")
    out: dict[str, dict[str, float]] = {}
    for unit, rows in raw.groupby("unit", sort=False):
        parts = str(unit).split("__")
        for j in parts:
            other = j if len(parts) == 1 else next(p for p in parts if p != j)
            mine = rows[rows["skill"] == j]
            hit = mine[mine["loss"] <= target]["step"]
            out.setdefault(j, {})[other] = float(hit.min()) if len(hit) else float("nan")
    return out


def _job_seconds(workdir: Path, pattern: str) -> float:
    return float(sum(pd.read_csv(f, sep="\t")["s"].sum() for f in workdir.glob(pattern)))


def run_seed(seed: int, out: Path, cores: int) -> dict:
    """One seed end to end; returns its numbers."""
    main = out / f"seed{seed}"
    main.mkdir(parents=True, exist_ok=True)
    cfg = _seed_config(main, seed, {"train": {"strategies": STRATEGIES}})
    wall = _snakemake(main, [REPO / "config.yaml", cfg], ["all"], cores)
    # the linear and gradient graphs measure loss changes (steps_to_target needs pair runs)
    other = out / f"seed{seed}_graphs"
    other.mkdir(parents=True, exist_ok=True)
    assemble = {"measure": "window", "normalise": "relative", "binary_edge_weight": None}
    # one run per skill, as the paper's linear graph (the brute-force one repeats its units)
    runs = {"seed": seed, "repeats": 1}
    cfg = _seed_config(other, seed, {"graph": {"runs": runs, "assemble": assemble}})
    targets = [f"results/graph/{m}/adjacency.npy" for m in METHODS if m != "brute_force"]
    _snakemake(other, [REPO / "config.yaml", cfg], targets, cores)
    anti = out / f"seed{seed}_skill_anticurriculum"
    anti.mkdir(parents=True, exist_ok=True)
    cfg = _seed_config(
        anti, seed, {"train": {"strategies": ["skill_curriculum"]}, "curriculum": {"reverse": True}}
    )
    _snakemake(anti, [REPO / "config.yaml", cfg], ["all"], cores)
    return collect(seed, out, wall)


def collect(seed: int, out: Path, wall: float) -> dict:
    """The numbers of one seed, read from its workflow folders."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    steps = int(config["train"]["steps"])
    main, other = out / f"seed{seed}", out / f"seed{seed}_graphs"
    anti = out / f"seed{seed}_skill_anticurriculum"
    numbers = {run: _strategy_numbers(main, run, steps // 2) for run in STRATEGIES}
    numbers["skill_anticurriculum"] = _strategy_numbers(anti, "skill_curriculum", steps // 2)
    xor = complete("source.xor", config["source"].get("xor"))
    known = xor_ground_truth(xor["maps"], xor["composites"])
    graphs = {
        m: np.load((main if m == "brute_force" else other) / f"results/graph/{m}/adjacency.npy")
        for m in METHODS
    }
    seconds = {
        "brute_force": _job_seconds(main, "benchmarks/graph_run/brute_force/*.tsv"),
        "linear": _job_seconds(other, "benchmarks/graph_run/linear/*.tsv"),
        "gradient": _job_seconds(other, "benchmarks/graph_assemble/gradient.tsv"),
    }
    return {
        "seed": seed,
        "wall_seconds": wall,
        "learned_at": {run: learned_at(main, run) for run in ("random", "stratified", "skillit")},
        "pair_steps": pair_steps(main, config["graph"]["assemble"]["target_loss"]),
        "strategies": numbers,
        "graphs": {m: g.tolist() for m, g in graphs.items()},
        "known": known.tolist(),
        "edges": {m: edge_agreement(g, known) for m, g in graphs.items()},
        "spearman_known": {m: graph_agreement(g, known) for m, g in graphs.items()},
        "spearman_brute_force": {m: graph_agreement(g, graphs["brute_force"]) for m, g in graphs.items()},
        "graph_job_seconds": seconds,
    }


def _mean_sd(values: list[float], digits: int) -> str:
    arr = np.asarray(values, dtype=float)
    sd = arr.std(ddof=1) if len(arr) > 1 else 0.0
    return f"{arr.mean():.{digits}f} ± {sd:.{digits}f}"


def report(results: list[dict]) -> str:
    """The Markdown report of all seeds."""
    steps = yaml.safe_load((REPO / "config.yaml").read_text())["train"]["steps"]
    wall = np.mean([r["wall_seconds"] for r in results])
    lines = [
        f"Seeds {[r['seed'] for r in results]}; mean wall time of the main workflow per seed {wall:.0f} s.",
        "",
        f"| strategy | test accuracy, step {steps} | val accuracy, step {steps // 2} | test loss "
        f"| val loss, step {steps // 2} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in ROWS:
        cells = [
            _mean_sd([r["strategies"][s]["accuracy"] for r in results], 3),
            _mean_sd([r["strategies"][s]["half_accuracy"] for r in results], 3),
            _mean_sd([r["strategies"][s]["loss"] for r in results], 4),
            _mean_sd([r["strategies"][s]["half_loss"] for r in results], 4),
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| graph | edge precision (per seed) | edge recall (per seed) | edge F1 | Spearman vs known "
        "| Spearman vs brute force | job seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def per(m: str, key: str) -> str:
        return ", ".join(f"{r['edges'][m][key]:.2f}" for r in results)

    for m in METHODS:
        versus_brute_force = (
            _mean_sd([r["spearman_brute_force"][m] for r in results], 2) if m != "brute_force" else "–"
        )
        lines.append(
            f"| {m} | {per(m, 'precision')} | {per(m, 'recall')} | "
            f"{_mean_sd([r['edges'][m]['f1'] for r in results], 2)} | "
            f"{_mean_sd([r['spearman_known'][m] for r in results], 2)} | "
            f"{versus_brute_force} | "
            f"{np.mean([r['graph_job_seconds'][m] for r in results]):.0f} |"
        )
    lines += [
        "",
        "First validation step at which a skill's accuracy reaches 0.95 (per seed; – never):",
        "",
        "| strategy | seed | " + " | ".join(results[0]["learned_at"]["stratified"]) + " |",
        "| --- | --- |" + " --- |" * len(results[0]["learned_at"]["stratified"]),
    ]
    for run in ("random", "stratified", "skillit"):
        for r in results:
            cells = ["–" if np.isnan(v) else f"{v:.0f}" for v in r["learned_at"][run].values()]
            lines.append(f"| {run} | {r['seed']} | " + " | ".join(cells) + " |")
    skills = list(results[0]["pair_steps"])
    lines += [
        "",
        "Brute-force runs: first evaluation step at which skill j's validation loss reaches the target,",
        "trained alone or beside skill i (per seed, – never within graph.runs.steps):",
        "",
        "| j (evaluated) | " + " | ".join(f"beside {i}" for i in skills) + " |",
        "| --- |" + " --- |" * len(skills),
    ]
    for j in skills:
        cells = []
        for i in skills:
            values = [r["pair_steps"][j].get(i, float("nan")) for r in results]
            cells.append(", ".join("–" if np.isnan(v) else f"{v:.0f}" for v in values))
        lines.append(
            f"| {j} | "
            + " | ".join(c if i != j else f"alone: {c}" for i, c in zip(skills, cells, strict=True))
            + " |"
        )
    bf = np.mean([np.array(r["graphs"]["brute_force"]) for r in results], axis=0)
    lines += ["", "Brute-force graph, mean over seeds (rows: trained on, columns: evaluated on):", ""]
    lines.append("```")
    lines.append(np.array2string(bf, precision=2, suppress_small=True))
    lines.append("```")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "bench/out/xor")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the seed folders")
    args = parser.parse_args()
    out = args.out.resolve()
    if args.report_only:
        saved = json.loads((out / "results.json").read_text())
        results = [collect(r["seed"], out, r["wall_seconds"]) for r in saved]
    else:
        results = [run_seed(s, out, args.cores) for s in args.seeds]
    text = report(results)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
