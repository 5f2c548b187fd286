"""Skill-It reproduction benchmark on LEGO (issue 3): graphs, strategies, wall time.

For every seed, runs the real workflow in its own folder with the given override config:
the brute-force and the linear skills graphs, then Skill-It, random, stratified and
curriculum at equal steps. Prints a Markdown report (and writes it with the raw numbers as
JSON): final test accuracy and loss per strategy (mean ± sd over seeds), the learned
brute-force graph (mean over seeds) with a check of the LEGO chain (is skill i helped most
by skill i − 1?), the Spearman correlation of the linear graph with the brute-force one, and
the summed job time of each graph's runs.

    python bench/skillit_lego.py --seeds 0 1 2 --out bench/out/default
    python bench/skillit_lego.py --override bench/configs/larger.yaml --out bench/out/larger
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

from skillmix.graph import graph_agreement

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ["random", "stratified", "curriculum", "skillit"]


def run_seed(seed: int, override: Path | None, out: Path, cores: int) -> dict:
    """One seed end to end; returns its numbers."""
    workdir = out / f"seed{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    seed_cfg = workdir / "seed.yaml"
    seed_cfg.write_text(
        yaml.safe_dump(
            {
                "source": {"seed": seed},
                "split": {"seed": seed},
                "model": {"seed": seed},
                "graph": {"runs": {"seed": seed}},
                "train": {"seed": seed, "strategies": STRATEGIES},
            }
        )
    )
    configs = [REPO / "config.yaml", *([override] if override else []), seed_cfg]
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--cores", str(cores), "--scheduler", "greedy", "--quiet=all",
        "all", "results/graph/linear/adjacency.npy",
        "--configfile", *map(str, configs),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - t0
    summary = pd.read_parquet(workdir / "results/eval/summary.parquet")
    test = summary[summary["split"] == "test"].set_index("run")
    graphs = {m: np.load(workdir / f"results/graph/{m}/adjacency.npy") for m in ("brute_force", "linear")}
    job_seconds = {
        m: float(
            sum(
                pd.read_csv(f, sep="\t")["s"].sum()
                for f in (workdir / f"benchmarks/graph_run/{m}").glob("*.tsv")
            )
        )
        for m in graphs
    }
    return {
        "seed": seed,
        "wall_seconds": wall,
        "accuracy": test["accuracy"].to_dict(),
        "loss": test["loss"].to_dict(),
        "graphs": {m: g.tolist() for m, g in graphs.items()},
        "graph_job_seconds": job_seconds,
    }


def _mean_sd(values: list[float], digits: int) -> str:
    arr = np.asarray(values, dtype=float)
    sd = arr.std(ddof=1) if len(arr) > 1 else 0.0
    return f"{arr.mean():.{digits}f} ± {sd:.{digits}f}"


def report(results: list[dict], override: Path | None) -> str:
    """The Markdown report of all seeds."""
    wall = np.mean([r["wall_seconds"] for r in results])
    scale = override.relative_to(REPO) if override else "none (config.yaml)"
    lines = [
        f"Override: `{scale}`; seeds {[r['seed'] for r in results]}; wall time per seed {wall:.0f} s.",
        "",
        "| strategy | test accuracy (mean ± sd) | test loss (mean ± sd) |",
        "| --- | --- | --- |",
    ]
    for s in STRATEGIES:
        acc = _mean_sd([r["accuracy"][s] for r in results], 3)
        loss = _mean_sd([r["loss"][s] for r in results], 4)
        lines.append(f"| {s} | {acc} | {loss} |")
    bf = np.mean([np.array(r["graphs"]["brute_force"]) for r in results], axis=0)
    k = bf.shape[0]
    off = ~np.eye(k, dtype=bool)
    lines += ["", "Brute-force graph, mean over seeds (rows: trained on, columns: evaluated on):", ""]
    lines += ["| | " + " | ".join(f"lego-{j + 1}" for j in range(k)) + " |", "|---" * (k + 1) + "|"]
    for i in range(k):
        lines.append(f"| lego-{i + 1} | " + " | ".join(f"{bf[i, j]:+.4f}" for j in range(k)) + " |")
    chain = [int(np.argmax(np.where(off[:, j], bf[:, j], -np.inf))) == j - 1 for j in range(1, k)]
    lines += [
        "",
        f"Chain check: for skills 2..{k}, the strongest helper is the previous skill in {sum(chain)} of "
        f"{k - 1} columns (chance: 1 of {k - 1}).",
    ]
    rhos = [
        graph_agreement(np.array(r["graphs"]["linear"]), np.array(r["graphs"]["brute_force"]))
        for r in results
    ]
    bf_s = np.mean([r["graph_job_seconds"]["brute_force"] for r in results])
    lin_s = np.mean([r["graph_job_seconds"]["linear"] for r in results])
    n_bf = k + k * (k - 1) // 2
    lines += [
        "",
        f"Linear vs brute-force graph (off-diagonal entries): Spearman {np.mean(rhos):+.3f} "
        f"(per seed {', '.join(f'{x:+.3f}' for x in rhos)}); summed job time of the graph runs "
        f"{lin_s:.0f} s (linear, {k} runs) vs {bf_s:.0f} s (brute force, {n_bf} runs).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--override", type=Path, default=None, help="an extra config file (the scale)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/out/default")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    override = args.override.resolve() if args.override else None
    results = [run_seed(s, override, args.out.resolve(), args.cores) for s in args.seeds]
    text = report(results, override)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
