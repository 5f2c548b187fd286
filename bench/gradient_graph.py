"""Benchmark of the gradient skills graph (issue 5) against the learned graphs on LEGO.

For every seed folder of `bench/skillit_lego.py` (which holds the sliced data and the
brute-force and linear graphs learned by real training runs), computes the gradient graph at
the same initial model with `skillmix.gradient_graph` for each transform and number of training
examples, and reports the Spearman correlation of its off-diagonal entries with the brute-force
and linear graphs, next to the summed job time of the brute-force runs. As a ceiling, the
agreement of two brute-force graphs that differ only in the runs' seed (`--rerun`, a folder
made with the same data and model seed and graph.runs.seed changed) is printed too.

    python bench/gradient_graph.py --out bench/out/default --seeds 0 1 2 --rerun bench/out/bf_rerun
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd
import yaml
from snakemake.utils import update_config

from skillmix.gradient_graph import gradient_graph_from_files
from skillmix.graph import graph_agreement, read_graph

REPO = Path(__file__).resolve().parents[1]


def job_seconds(folder: Path) -> float:
    """Summed wall time of the jobs whose benchmark files are in `folder`."""
    return float(sum(pd.read_csv(f, sep="\t")["s"].iloc[0] for f in folder.glob("*.tsv")))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/out/default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rerun", type=Path, default=None)
    parser.add_argument("--transforms", nargs="+", default=["sign", "identity"])
    parser.add_argument("--train-examples", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--emulate", nargs="+", default=["linear", "brute_force"])
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        run = args.out / f"seed{seed}"
        cfg = yaml.safe_load((REPO / "config.yaml").read_text())
        update_config(cfg, yaml.safe_load((run / "seed.yaml").read_text()))  # as --configfile does
        manifest = json.loads((run / "results/slices/manifest.json").read_text())
        slugs = [s["slug"] for s in manifest["skills"]]
        paths = {sp: [run / f"results/slices/{sp}/{s}.parquet" for s in slugs] for sp in ("train", "val")}
        brute = read_graph(run / "results/graph/brute_force")[0]
        linear = read_graph(run / "results/graph/linear")[0]
        bf_seconds = job_seconds(run / "benchmarks/graph_run/brute_force")
        for emulate, transform, n in itertools.product(args.emulate, args.transforms, args.train_examples):
            out = Path("/tmp/skillmix_gradient_graph_bench") / f"seed{seed}_{emulate}_{transform}_{n}"
            gcfg = {"transform": transform, "emulate": emulate, "train_examples": n}
            start = time.perf_counter()
            A = gradient_graph_from_files(
                cfg["model"],
                gcfg,
                cfg["graph"]["assemble"],
                cfg["graph"]["runs"]["eval_examples"],
                cfg["graph"]["runs"]["lr"],
                run / "results/slices/manifest.json",
                paths["train"],
                paths["val"],
                out / "adjacency.npy",
            )
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "seed": seed,
                    "emulate": emulate,
                    "transform": transform,
                    "train_examples": n,
                    "spearman_brute_force": graph_agreement(A, brute),
                    "spearman_linear": graph_agreement(A, linear),
                    "seconds": seconds,
                    "brute_force_seconds": bf_seconds,
                    "time_ratio": seconds / bf_seconds,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    print(
        "\n| emulate | T | train examples | Spearman vs brute force (per seed) | mean "
        "| Spearman vs linear (mean) | time / brute force |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (e, t, n), g in table.groupby(["emulate", "transform", "train_examples"], sort=False):
        per_seed = ", ".join(f"{v:+.2f}" for v in g["spearman_brute_force"])
        print(
            f"| {e} | {t} | {n} | {per_seed} | {g['spearman_brute_force'].mean():+.2f} | "
            f"{g['spearman_linear'].mean():+.2f} | {g['time_ratio'].mean():.4f} "
            f"({g['seconds'].mean():.1f} s / {g['brute_force_seconds'].mean():.0f} s) |"
        )
    if args.rerun is not None:
        a = read_graph(args.out / "seed0/results/graph/brute_force")[0]
        b = read_graph(args.rerun / "results/graph/brute_force")[0]
        print(
            "\nbrute force, seed0 vs the same data and model with another run seed: "
            f"{graph_agreement(a, b):+.2f}"
        )
        for s1 in args.seeds:
            for s2 in args.seeds:
                if s1 < s2:
                    x = read_graph(args.out / f"seed{s1}/results/graph/brute_force")[0]
                    y = read_graph(args.out / f"seed{s2}/results/graph/brute_force")[0]
                    print(
                        f"brute force, seed{s1} vs seed{s2} (other data and model): "
                        f"{graph_agreement(x, y):+.2f}"
                    )


if __name__ == "__main__":
    main()
