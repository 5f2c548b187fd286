"""Dry-run time of the skills-graph DAG for many skills (issue 3; issue 6 has the 20 s goal).

Makes a table source with N skills, slices it (the checkpoint), then times
`snakemake -n results/graph/<method>/adjacency.npy`: the DAG of k + k(k-1)/2 brute-force
runs (or k linear runs) plus the assembly. With `--shards S`, also times the dry run of the
whole workflow (`all`: the graph, every training strategy, and LESS with S gradient shards
per checkpoint and set).

    python bench/graph_dag.py --skills 50 100 --method brute_force linear
    python bench/graph_dag.py --skills 100 --method brute_force --shards 64
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, *args: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "2", "--scheduler", "greedy", *args,
        "--configfile", str(REPO / "config.yaml"), str(workdir / "override.yaml"), *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, check=True)


def time_dag(n_skills: int, methods: list[str], root: Path, shards: int | None = None) -> list[dict]:
    """Slice a table of `n_skills` skills, then time the dry run of each method's graph."""
    workdir = root / f"skills{n_skills}"
    workdir.mkdir()
    rows = [
        {"id": f"{s}-{i}", "skill": f"skill {s:03d}", "prompt": f"Q{s} {i}?", "answer": str(i)}
        for s in range(n_skills)
        for i in range(4)
    ]
    (workdir / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    override = {
        "source": {
            "kind": "table",
            "table": {"path": "data.jsonl", "prompt_column": "prompt", "answer_column": "answer"},
        },
        "split": {"val": 1, "test": 1},
    }
    (workdir / "override.yaml").write_text(yaml.safe_dump(override))
    snakemake(workdir, "--until", "slice", "--quiet=all")
    out = []
    for method in methods:
        t0 = time.perf_counter()
        done = snakemake(workdir, "-n", "--quiet=rules", f"results/graph/{method}/adjacency.npy")
        seconds = time.perf_counter() - t0
        jobs = re.search(r"graph_run\s+(\d+)", done.stdout)
        out.append({"skills": n_skills, "method": method, "graph_runs": int(jobs.group(1)) if jobs else 0,
                    "dry_run_seconds": round(seconds, 1)})  # fmt: skip
    if shards:
        select = {"select": {"enabled": True, "target": {"skills": ["skill 000"]}}}
        (workdir / "select.yaml").write_text(yaml.safe_dump(select))
        t0 = time.perf_counter()
        done = snakemake(
            workdir,
            "-n",
            "--quiet=rules",
            "--set-scatter",
            f"grads={shards}",
            extra=(str(workdir / "select.yaml"),),
        )
        seconds = time.perf_counter() - t0
        counts = dict(re.findall(r"^(\w+)\s+(\d+)$", done.stdout, re.M))
        what = f"all + LESS ({shards} shards: {counts.get('grads')} grads jobs, {counts.get('total')} jobs)"
        out.append({"skills": n_skills, "method": what, "graph_runs": int(counts.get("graph_run", 0)),
                    "dry_run_seconds": round(seconds, 1)})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skills", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--method", nargs="+", default=["brute_force", "linear"])
    parser.add_argument("--shards", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [r for n in args.skills for r in time_dag(n, args.method, Path(tmp), args.shards)]
    print("| skills | method | graph_run jobs | dry-run seconds |\n| --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['skills']} | {r['method']} | {r['graph_runs']} | {r['dry_run_seconds']} |")


if __name__ == "__main__":
    main()
