"""LESS selection quality (issue 4): does the selection find the target skill, and does it help?

For every target skill, runs the real workflow (warm-up → gradient datastore → influence →
selection → training on the LESS and on a random selection → evaluation) in its own folder,
with the target = that skill's validation slice. Reports:

* precision: the share of the selected examples that belong to the target skill, next to the
  skill's share of the pool (what a random selection gets on average);
* the target skill's test loss and exact-match accuracy after training on the LESS selection
  and on the random selection of the same size;
* the wall time of the whole run.

    python bench/less_quality.py --targets lego-1 lego-5 --out bench/out/less_lego
    python bench/less_quality.py --ni --targets "<NI category>" --out bench/out/less_ni
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
LEGO_EXAMPLE = REPO / "examples" / "less_lego" / "config.yaml"
NI_EXAMPLE = REPO / "examples" / "ni" / "config.yaml"
TARGETS = [
    "results/select/eval/summary.parquet",
    "results/select/selected/composition.parquet",
]


def shared_data() -> Path:
    value = os.environ.get("SKILLMIX_SHARED_DATA")
    return Path(value) if value else REPO.parent / "shared" / "data"


def run_target(skill: str, ni: bool, out: Path, cores: int, shards: int, seed: int) -> dict:
    """One target skill end to end; returns its numbers."""
    slug = "".join(c if c.isalnum() else "_" for c in skill)
    workdir = out / f"{slug}-seed{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    override: dict = {
        "select": {
            "target": {"skills": [skill]},
            "grads": {"shards": shards},
            "warmup": {"seed": seed},
            "selection": {"seed": seed},
        },
        "model": {"seed": seed},
    }
    configs = [REPO / "config.yaml"]
    if ni:
        data = shared_data() / "ni_task_subset"
        configs.append(NI_EXAMPLE)
        override["source"] = {
            "natural_instructions": {
                "tasks_dir": str(data / "tasks"),
                "categories_csv": str(data / "task_categories.csv"),
            }
        }
    configs.append(LEGO_EXAMPLE)  # its select block (LoRA, warm-up, dims) serves both data sets
    (workdir / "bench.yaml").write_text(yaml.safe_dump(override))
    configs.append(workdir / "bench.yaml")
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores), "--scheduler", "greedy",
        "--quiet=all", *TARGETS, "--configfile", *map(str, configs),
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"workflow failed for {skill}:\n{done.stderr[-4000:]}")
    comp = pd.read_parquet(workdir / TARGETS[1])
    row = comp[comp["skill"] == skill].iloc[0]
    summary = pd.read_parquet(workdir / TARGETS[0]).set_index("selection")
    selected = int(comp["less"].sum())
    return {
        "target": skill,
        "seed": seed,
        "pool": int(comp["pool"].sum()),
        "selected": selected,
        "pool_share": float(row["pool_share"]),
        "precision_less": float(row["less_share"]),
        "precision_random": float(row["random_share"]),
        "loss_less": float(summary.loc["less", "loss"]),
        "loss_random": float(summary.loc["random", "loss"]),
        "acc_less": float(summary.loc["less", "accuracy"]),
        "acc_random": float(summary.loc["random", "accuracy"]),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", nargs="+", default=["lego-1", "lego-5"])
    parser.add_argument("--ni", action="store_true", help="NI subset as the pool (shared data)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "less_quality")
    args = parser.parse_args()
    rows = [
        run_target(t, args.ni, args.out, args.cores, args.shards, s) for t in args.targets for s in args.seeds
    ]
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    cols = [
        "target", "seed", "pool", "selected", "pool_share", "precision_less", "precision_random",
        "loss_less", "loss_random", "acc_less", "acc_random", "wall_s",
    ]  # fmt: skip
    print(table[cols].to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
