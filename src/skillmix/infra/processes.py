"""Several processes in one job: launching them and what the training loop needs to know of them.

A job that asks for N > 1 processes (`resources.<rule>.processes`, or one per GPU of
`resources.<rule>.gpu`) runs its job function in N processes started by PyTorch's launcher
(`torch.distributed.run`, standalone rendezvous on this node). Each process joins one process
group (NCCL on GPUs, each process on the GPU of its local rank among those the job's lease made
visible; gloo on CPUs). With one process the job function runs in the job's own process and no
process group exists. Functions here answer for the current process in both cases.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)


def job_processes(processes: int | None, gpus: int) -> int:
    """How many processes a job runs: `processes` when given (None or 0, Snakemake's number for an
    unset resource, is not), else one per GPU (at least one)."""
    if processes:
        if processes < 1:
            raise SkillmixInputError(f"resources: processes must be >= 1, got {processes}")
        if gpus > 1 and processes != gpus:
            raise SkillmixInputError(
                f"resources: {processes} processes on {gpus} GPUs; a multi-GPU job runs one process per GPU"
            )
        return processes
    return max(1, int(gpus))


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    """Processes in the current process group (1 without one)."""
    dist = _dist()
    return dist.get_world_size() if dist else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    dist = _dist()
    return dist.get_rank() if dist else 0


def is_main() -> bool:
    """Whether this process writes the job's outputs (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing without a process group)."""
    dist = _dist()
    if dist:
        dist.barrier()


def sum_over_processes(value: float) -> float:
    """The sum of `value` over all processes (the value itself without a process group)."""
    dist = _dist()
    if not dist:
        return float(value)
    import torch

    t = torch.tensor([float(value)], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return float(t.item())


def _device():
    """Where a collective's tensor lives: this process's GPU under NCCL, else the CPU."""
    import torch

    dist = _dist()
    if dist and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def local_device() -> str | None:
    """The CUDA device of this process in a multi-process GPU job (e.g. `cuda:1`), else None."""
    import torch

    if _dist() and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return None


def resolve(target: str) -> Callable[..., Any]:
    """The job function named `module:function` (in a launched process)."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"job function must be named module:function, got {target!r}")
    return getattr(importlib.import_module(module), name)


def launch(
    target: Callable[..., Any], kwargs: dict[str, Any], processes: int = 1, threads: int | None = None
) -> None:
    """Run the job function `target` (a module-level function) with JSON-serialisable `kwargs`.

    With one process it runs here. With more it runs in `processes` processes of one process
    group, each with `threads` // `processes` CPU threads (at least one); their output goes to
    this process's stderr (the job's log). Stops with RuntimeError naming the exit status when
    a process fails.
    """
    if processes <= 1:
        target(**kwargs)
        return
    name = f"{target.__module__}:{target.__qualname__}"
    per_process = max(1, (threads or processes) // processes)
    with tempfile.TemporaryDirectory(prefix="skillmix-launch-") as tmp:
        spec = Path(tmp) / "job.json"
        spec.write_text(json.dumps({"target": name, "kwargs": kwargs, "threads": per_process}))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "skillmix.infra.processes",
            str(spec),
        ]
        log.info("launching %s in %d processes (%d threads each)", name, processes, per_process)
        err = sys.stderr if _has_fileno(sys.stderr) else None
        env = {**os.environ, "OMP_NUM_THREADS": str(per_process)}
        done = subprocess.run(command, stdout=err, stderr=err, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{name} failed in one of its {processes} processes (exit status {done.returncode}); "
            "the traceback is in the job's log above"
        )


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _worker(spec_path: str) -> None:
    """One process of a launched job: join the process group, run the job function, leave."""
    import torch
    import torch.distributed as dist

    spec = json.loads(Path(spec_path).read_text())
    local = int(os.environ.get("LOCAL_RANK", 0))
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s [process {os.environ.get('RANK', '?')}] %(name)s %(levelname)s: %(message)s",
        force=True,
    )
    torch.set_num_threads(int(spec["threads"]))
    if torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise SkillmixInputError(
                f"process {local} of the job has no GPU of its own: the job sees "
                f"{torch.cuda.device_count()} GPU(s); on GPUs a job runs one process per GPU "
                "(set resources.<rule>.gpu to the number of processes)"
            )
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    else:
        dist.init_process_group("gloo")
    try:
        resolve(spec["target"])(**spec["kwargs"])
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
