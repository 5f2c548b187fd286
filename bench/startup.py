"""A job's fixed cost beside `import torch` (issue 29): CPU time, measured side by side in one run.

Slices the default config (config.yaml) once, untimed, then alternates N times between a
subprocess that imports torch and one subprocess per job kind doing what that job does before its
first training step:

- graph: the graph_run job (workflow/scripts/graph_run.py): its imports, then the tiny default
  model and tokenizer built from config and the unit's training and every validation slice loaded
  and encoded (`load_run_data`, as `graph_unit_curve` does before training);
- train: the train job (workflow/scripts/train.py): its imports, then the stratified strategy's
  run prepared (`prepare_run`: model, tokenizer, encoded slices, sampler).

A job whose script turns the garbage collector off for its imports and freezes what they made
(`gc.freeze()` in the script of the checkout whose skillmix is imported) does the same here.
Each subprocess's CPU time is user + sys from `os.wait4`. Prints the per-kind medians and, last,
`job start / import torch: X` (the heaviest job's median over import torch's median).

    python bench/startup.py            # 5 rounds
    python bench/startup.py --rounds 9
    PYTHONPATH=/path/to/other/checkout/src python bench/startup.py   # another version of the code
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("torch", "graph", "train")
GRAPH_UNIT = "map-f__xor-f"
"""The unit the graph job sets up: a pair, the larger kind of unit."""
SCRIPTS = {"graph": "graph_run.py", "train": "train.py"}


def imports_start(setup: dict, kind: str) -> None:
    if setup["gc_freeze"][kind]:
        gc.disable()


def imports_done(setup: dict, kind: str) -> None:
    if setup["gc_freeze"][kind]:
        gc.freeze()
        gc.enable()


def child_torch(setup: dict) -> None:
    import torch  # noqa: F401


def child_graph(setup: dict) -> None:
    """graph_run.py up to its first training step."""
    imports_start(setup, "graph")
    from skillmix.infra.jobs import start_log

    start_log(setup["log"], 1, 0)
    from skillmix.engine.training_run import load_run_data
    from skillmix.graph.unit_runs import graph_unit_curve  # noqa: F401  (the job's import)
    from skillmix.graph.units import unit_slugs

    imports_done(setup, "graph")
    by_slug = {s["slug"]: s["name"] for s in setup["manifest"]["skills"]}
    slices = Path(setup["slices"])
    unit = [by_slug[slug] for slug in unit_slugs(GRAPH_UNIT)]
    load_run_data(
        setup["config"]["model"],
        unit,
        list(by_slug.values()),
        [slices / "train" / f"{slug}.parquet" for slug in unit_slugs(GRAPH_UNIT)],
        [slices / "val" / f"{slug}.parquet" for slug in by_slug],
        setup["config"]["graph"]["runs"]["eval_examples"],
        val_eos=setup["config"]["eval"]["eos_in_loss"],
    )


def child_train(setup: dict) -> None:
    """train.py up to its first training step (the stratified strategy: no graph needed)."""
    imports_start(setup, "train")
    from skillmix.infra.jobs import start_log

    start_log(setup["log"], 1, 0)
    from skillmix.infra.processes import job_processes, launch  # noqa: F401  (the job's import)
    from skillmix.mixing.job import prepare_run, train_job  # noqa: F401

    imports_done(setup, "train")
    cfg = setup["config"]
    slugs = [s["slug"] for s in setup["manifest"]["skills"]]
    slices = Path(setup["slices"])
    prepare_run(
        "stratified",
        slices / "manifest.json",
        [slices / "train" / f"{slug}.parquet" for slug in slugs],
        [slices / "val" / f"{slug}.parquet" for slug in slugs],
        model_cfg=cfg["model"],
        train_cfg=cfg["train"],
        eval_cfg=cfg["eval"],
        strategy_cfg=cfg.get("stratified"),
        source_cfg=cfg["source"],
    )


def make_setup(root: Path) -> Path:
    """Slice config.yaml's source into `root` (the workflow's config handling) and write the
    setup file the children read."""
    import yaml

    import skillmix
    from skillmix.data.slicing import make_slices
    from skillmix.data.sources import resolve_tiny_tokenizer
    from skillmix.infra.config import validate_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(config)  # fills the schema's defaults, as the Snakefile does
    config["model"]["tiny"] = resolve_tiny_tokenizer(config["model"], config["source"])
    slices = root / "slices"
    manifest = make_slices(config["source"], config["split"], slices)
    # the job scripts of the checkout whose skillmix is imported (PYTHONPATH may name another)
    scripts = Path(skillmix.__file__).resolve().parents[2] / "workflow" / "scripts"
    freeze = {kind: "gc.freeze()" in (scripts / name).read_text() for kind, name in SCRIPTS.items()}
    setup = {
        "gc_freeze": freeze,
        "checkout": str(scripts.parents[1]),
        "config": config,
        "manifest": manifest,
        "slices": str(slices),
        "log": str(root / "job.log"),
    }
    path = root / "setup.json"
    path.write_text(json.dumps(setup, default=str))
    return path


def cpu_seconds(kind: str, setup: Path) -> float:
    """User + sys CPU seconds of one child process of `kind`."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--setup", str(setup)]
    proc = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{kind} child failed with exit code {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternations (default 5)")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        globals()[f"child_{args.child}"](json.loads(Path(args.setup).read_text()))
        return
    with tempfile.TemporaryDirectory(prefix="startup_") as tmp:
        setup = make_setup(Path(tmp))
        print(f"checkout: {json.loads(setup.read_text())['checkout']}")
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for _ in range(args.rounds):
            for kind in KINDS:
                times[kind].append(cpu_seconds(kind, setup))
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    for kind in KINDS:
        values = " ".join(f"{v:.2f}" for v in times[kind])
        print(f"{kind:6s} median CPU {medians[kind]:.2f} s  ({values})")
    heaviest = max(("graph", "train"), key=medians.get)
    print(f"heaviest job: {heaviest}")
    print(f"job start / import torch: {medians[heaviest] / medians['torch']:.2f}")


if __name__ == "__main__":
    main()
