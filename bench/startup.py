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
(`gc.freeze()` in the script of the checkout whose skillmix is imported, or `run_workflow_job`) does the
same here. These are the jobs started cold. Started warm (`skillmix.infra.warm`, config
`jobs.warm_start`), the same two jobs run in a child forked by a warm server, started by one
untimed round: a kind's CPU time is then the job's own process (the client) plus the server's
child. `preload` is the server's imports, paid once a run. Each subprocess's CPU time is user +
sys from `os.wait4`. Prints the per-kind medians and, last, `job start / import torch: X` (the
heaviest job's median over import torch's median) for the way a local run with the default config
starts its jobs on this machine (warm unless the machine has GPU devices), after both ratios.

`--baseline DIR` measures another checkout's code (DIR/src first on PYTHONPATH, its own job
scripts) in the same rounds, side by side. `--bytecode` measures each checkout a second time with
the modules' bytecode kept (PYTHONDONTWRITEBYTECODE unset, PYTHONPYCACHEPREFIX a folder of the
run, filled by one untimed run of each kind first): where PYTHONDONTWRITEBYTECODE=1 is set, a
checkout's modules compile in every job, which a user's install or checkout does not do. The last
line is always this checkout's, as the environment runs it.

    python bench/startup.py            # 5 rounds
    python bench/startup.py --rounds 9
    python bench/startup.py --baseline /tmp/base_checkout --bytecode
    PYTHONPATH=/path/to/other/checkout/src python bench/startup.py   # another version of the code
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("torch", "graph", "train", "preload", "graph-warm", "train-warm")
JOBS = ("graph", "train")
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


def job_scripts() -> Path:
    """The job scripts of the checkout whose skillmix is imported (PYTHONPATH may name another)."""
    import skillmix

    return Path(skillmix.__file__).resolve().parents[2] / "workflow" / "scripts"


def freezes(scripts: Path) -> dict[str, bool]:
    """Per job kind: whether its script freezes what its imports made (itself, or through
    `run_workflow_job`, which does)."""
    out = {}
    for kind, name in SCRIPTS.items():
        text = (scripts / name).read_text()
        out[kind] = "gc.freeze()" in text or "run_workflow_job(" in text
    return out


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


def child_preload(setup: dict) -> None:
    """What a warm server does once per run before its first job: import its libraries."""
    from skillmix.infra.warm import PRELOAD

    gc.disable()
    for module in PRELOAD:
        importlib.import_module(module)
    gc.freeze()
    gc.enable()


def warm_client(setup: dict, kind: str) -> None:
    """A job started warm: hand `kind`'s setup to the warm server (started by an untimed round)
    and write the CPU seconds of the server's child that ran it to setup['warm_cpu']."""
    from skillmix.infra.warm import run_warm

    request = {"target": f"startup:child_{kind}", "kwargs": {"setup": setup}}
    request |= {"log": setup["log"], "threads": 1}
    status = run_warm(request, idle=60)
    if status is None or status["rc"] or status["cpu"] is None:
        raise SystemExit(f"warm {kind} job failed ({status}); see {setup['log']}")
    Path(setup["warm_cpu"]).write_text(str(status["cpu"]))


def child_graph_warm(setup: dict) -> None:
    warm_client(setup, "graph")


def child_train_warm(setup: dict) -> None:
    warm_client(setup, "train")


def make_setup(root: Path) -> Path:
    """Slice config.yaml's source into `root` (the workflow's config handling) and write the
    setup file the children read."""
    import yaml

    from skillmix.data.slicing import make_slices
    from skillmix.data.sources import resolve_tiny_tokenizer
    from skillmix.infra.config import validate_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(config)  # fills the schema's defaults, as the Snakefile does
    config["model"]["tiny"] = resolve_tiny_tokenizer(config["model"], config["source"])
    slices = root / "slices"
    manifest = make_slices(config["source"], config["split"], slices)
    scripts = job_scripts()
    setup = {
        "gc_freeze": freezes(scripts),
        "checkout": str(scripts.parents[1]),
        "config": config,
        "manifest": manifest,
        "slices": str(slices),
        "log": str(root / "job.log"),
        "warm_cpu": str(root / "warm_cpu.txt"),
    }
    path = root / "setup.json"
    path.write_text(json.dumps(setup, default=str))
    return path


def variants(args: argparse.Namespace, root: Path) -> dict[str, dict[str, str]]:
    """The child environments measured side by side, this checkout's (as the environment runs it)
    first: a label and the environment variables it sets ("" unsets one)."""
    path = os.environ.get("PYTHONPATH", "")
    out: dict[str, dict[str, str]] = {"this": {}}
    if args.baseline:
        base = str(Path(args.baseline).resolve() / "src")
        out["baseline"] = {"PYTHONPATH": f"{base}{os.pathsep}{path}" if path else base}
    if args.bytecode:
        kept = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(root / "pycache")}
        out |= {f"{label}+bytecode": {**env, **kept} for label, env in list(out.items())}
    return out


def child_env(overrides: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **overrides}
    return {key: value for key, value in env.items() if value != "" or key not in overrides}


def cpu_seconds(kind: str, setup: Path, label: str, overrides: dict[str, str]) -> float:
    """User + sys CPU seconds of one child process of `kind`."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--setup", str(setup)]
    proc = subprocess.Popen([*command, "--variant", label], env=child_env(overrides))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{kind} child ({label}) failed with exit code {proc.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    if kind.endswith("-warm"):  # and the CPU of the server's child that ran the job
        cpu += float(Path(json.loads(setup.read_text())["warm_cpu"]).read_text())
    return cpu


def kinds_of(setup: Path, label: str) -> tuple[str, ...]:
    """The kinds a variant can run: a checkout without warm start has only the cold ones."""
    checkout = Path(json.loads(setup.read_text())["variants"][label]["checkout"])
    warm = (checkout / "src" / "skillmix" / "infra" / "warm.py").exists()
    return KINDS if warm else ("torch", *JOBS)


def describe(args: argparse.Namespace, setup: Path, measured: dict[str, dict[str, str]]) -> None:
    """Add each variant's checkout and job-script freezes to the setup file; print them."""
    data = json.loads(setup.read_text())
    data["variants"] = {}
    for label, overrides in measured.items():
        checkout = Path(args.baseline).resolve() if label.startswith("baseline") else Path(data["checkout"])
        scripts = checkout / "workflow" / "scripts"
        data["variants"][label] = {"checkout": str(checkout), "gc_freeze": freezes(scripts)}
        print(f"{label}: {checkout}  {' '.join(f'{k}={v}' for k, v in overrides.items())}".rstrip())
    setup.write_text(json.dumps(data, default=str))


def report(times: dict[str, dict[str, list[float]]]) -> None:
    """Per variant: each kind's median CPU seconds and the heaviest job over import torch; the
    last line is the first variant's ratio."""
    ratios = {}
    for label, by_kind in times.items():
        medians = {kind: statistics.median(values) for kind, values in by_kind.items()}
        for kind in by_kind:
            values = " ".join(f"{v:.2f}" for v in by_kind[kind])
            print(f"{label:18s} {kind:6s} median CPU {medians[kind]:.2f} s  ({values})")
        for start in ("cold", "warm") if "preload" in medians else ("cold",):
            kinds = JOBS if start == "cold" else tuple(f"{job}-warm" for job in JOBS)
            heaviest = max(kinds, key=medians.get)
            ratios[label, start] = (heaviest, medians[heaviest] / medians["torch"])
        if "preload" in medians:
            once = medians["preload"] / medians["torch"]
            print(f"{label:18s} the warm server's imports, once a run: {once:.2f} x import torch")
    for (label, start), (heaviest, ratio) in ratios.items():
        print(f"{label:18s} {start}: heaviest job {heaviest}, job start / import torch: {ratio:.2f}")
    first = next(iter(times))
    start = local_start()
    how = "how a local run starts its jobs, jobs.warm_start: auto"
    print(f"heaviest job: {ratios[first, start][0]} ({start}: {how})")
    print(f"job start / import torch: {ratios[first, start][1]:.2f}")


def local_start() -> str:
    """How the default config starts a one-process job on this machine: warm or cold."""
    from skillmix.infra.warm import warm_wanted

    return "warm" if warm_wanted("auto", 1) else "cold"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternations (default 5)")
    parser.add_argument("--baseline", help="another checkout measured side by side")
    parser.add_argument("--bytecode", action="store_true", help="also measure with bytecode kept")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        setup = json.loads(Path(args.setup).read_text())
        if args.variant:
            setup["gc_freeze"] = setup["variants"][args.variant]["gc_freeze"]
        globals()[f"child_{args.child.replace('-', '_')}"](setup)
        return
    with tempfile.TemporaryDirectory(prefix="startup_") as tmp:
        setup = make_setup(Path(tmp))
        measured = variants(args, Path(tmp))
        describe(args, setup, measured)
        kinds = {label: kinds_of(setup, label) for label in measured}
        for label, overrides in measured.items():  # untimed: starts the warm servers
            bytecode = "PYTHONPYCACHEPREFIX" in overrides
            for kind in kinds[label] if bytecode else set(kinds[label]) & {"train-warm"}:
                cpu_seconds(kind, setup, label, overrides)  # (and fills the bytecode caches)
        times = {label: {kind: [] for kind in kinds[label]} for label in measured}
        for _ in range(args.rounds):
            for label, overrides in measured.items():
                for kind in kinds[label]:
                    times[label][kind].append(cpu_seconds(kind, setup, label, overrides))
    report(times)


if __name__ == "__main__":
    main()
