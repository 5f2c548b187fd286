"""LESS on the synthetic XOR skills (issue 13): does the selection find a rare skill, does training
on it beat a random selection, and does the selection collapse onto one answer?

For every seed, runs the real workflow with `examples/less_xor/config.yaml` (the seed everywhere:
data, secret maps, split, model, the base run, warm-up, random selection) in one folder with
LESS's own score (`influence.match: mean`, `selection.balance: none`), then each other variant in
a copy of that folder, so the datastore is computed once and only scoring, selection, training
and evaluation run again. Variants: `faithful` (mean, none), `answer` (mean, answer-balanced),
`max` (per-example max, none), `max_answer` (both), `example` (the nearest candidates of each
target example in turn). Reports per variant, mean ± sd over seeds:

- the target skill's share of the selection (its share of the pool is the random expectation);
- the share of the selection's most frequent answer (0.5 is balanced; 1.0 is a collapse);
- the target's test accuracy (the answer bit, chance 0.5) after training on the LESS selection
  and on the random selection of the same size, and their difference.

    python bench/less_synthetic.py --seeds 0 1 2 --out bench/out/less_xor
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "less_xor" / "config.yaml"
TARGETS = ["results/select/eval/summary.parquet", "results/select/selected/answers.parquet"]
VARIANTS = {
    "faithful": {"influence": {"match": "mean"}, "selection": {"balance": "none"}},
    "answer": {"influence": {"match": "mean"}, "selection": {"balance": "answer"}},
    "max": {"influence": {"match": "max"}, "selection": {"balance": "none"}},
    "max_answer": {"influence": {"match": "max"}, "selection": {"balance": "answer"}},
    "example": {"influence": {"match": "mean"}, "selection": {"balance": "example"}},
}


def _run(workdir: Path, configs: list[Path], cores: int) -> float:
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores), "--quiet=all",
        *TARGETS, "--configfile", *map(str, configs),
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"workflow failed in {workdir}:\n{done.stderr[-4000:]}")
    return time.perf_counter() - t0


def _override(seed: int, variant: dict) -> dict:
    return {
        "source": {"seed": seed},
        "split": {"seed": seed},
        "model": {"seed": seed},
        "train": {"seed": seed},
        "select": {
            "warmup": {"seed": seed},
            "selection": {"seed": seed, **variant["selection"]},
            "influence": variant["influence"],
        },
    }


def _numbers(workdir: Path, target: str) -> dict:
    summary = pd.read_parquet(workdir / TARGETS[0]).set_index("selection")
    comp = pd.read_parquet(workdir / "results/select/selected/composition.parquet").set_index("skill")
    answers = pd.read_parquet(workdir / TARGETS[1])
    answers = answers[answers["answer"] != "(other)"]
    return {
        "acc_less": float(summary.loc["less", "accuracy"]),
        "acc_random": float(summary.loc["random", "accuracy"]),
        "loss_less": float(summary.loc["less", "loss"]),
        "loss_random": float(summary.loc["random", "loss"]),
        "target_share_less": float(comp.loc[target, "less_share"]),
        "target_share_random": float(comp.loc[target, "random_share"]),
        "target_share_pool": float(comp.loc[target, "pool_share"]),
        "majority_answer_less": float(answers["less_share"].max()),
        "majority_answer_random": float(answers["random_share"].max()),
    }


def run_seed(seed: int, out: Path, cores: int, variants: list[str]) -> list[dict]:
    """The variants for one seed; the first folder computes the datastore, the others copy it."""
    target = yaml.safe_load(EXAMPLE.read_text())["select"]["target"]["skills"][0]
    rows = []
    first = out / f"seed{seed}" / "faithful"
    for name in variants:
        workdir = out / f"seed{seed}" / name
        if first.exists() and not workdir.exists():
            shutil.copytree(first, workdir, symlinks=True)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "bench.yaml").write_text(yaml.safe_dump(_override(seed, VARIANTS[name])))
        wall = _run(workdir, [REPO / "config.yaml", EXAMPLE, workdir / "bench.yaml"], cores)
        rows.append({"seed": seed, "variant": name, "wall_s": wall, **_numbers(workdir, target)})
        if not first.exists():
            first = workdir
    return rows


def _mean_sd(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def report(rows: list[dict]) -> str:
    table = pd.DataFrame(rows)
    lines = [
        f"Seeds {sorted(table['seed'].unique().tolist())}.",
        "",
        "| variant | target share, LESS | majority answer, LESS | target acc., LESS | "
        "target acc., random | LESS − random |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in [v for v in VARIANTS if v in set(table["variant"])]:
        t = table[table["variant"] == name]
        lines.append(
            f"| {name} | {_mean_sd(t['target_share_less'])} | {_mean_sd(t['majority_answer_less'])} | "
            f"{_mean_sd(t['acc_less'])} | {_mean_sd(t['acc_random'])} | "
            f"{_mean_sd(t['acc_less'] - t['acc_random'])} |"
        )
    first = table[table["variant"] == "faithful"]
    others = table[table["variant"] != "faithful"]
    lines += [
        "",
        f"Target share of the pool {_mean_sd(first['target_share_pool'])}, of the random selection "
        f"{_mean_sd(first['target_share_random'])}; majority answer of the random selection "
        f"{_mean_sd(first['majority_answer_random'])}. Wall time of the first variant per seed "
        f"{first['wall_s'].mean():.0f} s, of each other {others['wall_s'].mean():.0f} s.",
        "",
        "Per seed (target accuracy LESS / random):",
    ]
    for seed, t in table.groupby("seed"):
        lines.append(
            f"- seed {seed}: "
            + ", ".join(f"{r.variant} {r.acc_less:.2f} / {r.acc_random:.2f}" for r in t.itertuples())
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "less_xor")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from results.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.json"
    rows = json.loads(results.read_text()) if results.exists() else []
    if not args.report_only:
        new = [row for seed in args.seeds for row in run_seed(seed, args.out, args.cores, args.variants)]
        done = {(r["seed"], r["variant"]) for r in new}
        rows = [r for r in rows if (r["seed"], r["variant"]) not in done] + new  # reruns replace
        results.write_text(json.dumps(rows, indent=1))
    text = report(rows)
    (args.out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
