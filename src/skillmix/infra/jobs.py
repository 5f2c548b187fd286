"""What every workflow job needs: a log file, atomic output writes, job metrics."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from skillmix.infra.errors import SkillmixInputError

if TYPE_CHECKING:  # torch is imported where it is used, so that writing files does not need it
    import torch


_GPU_LEASE = None  # the job's GPU lease, held until the process ends


def start_log(path: str | os.PathLike, threads: int | None = None, gpus: int | None = None) -> logging.Logger:
    """Send stderr (warnings, tracebacks, progress bars) and logging to the job's log file.

    With `gpus` (the job's `resources.gpu`), leases that many free GPUs of the machine and sets
    `CUDA_VISIBLE_DEVICES` before torch starts (`skillmix.infra.gpus`; none for 0). Also caps
    torch's CPU threads at the job's `threads`.
    """
    global _GPU_LEASE
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
    sys.stderr = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        force=True,
    )
    if gpus is not None:
        from skillmix.infra.gpus import lease_gpus

        _GPU_LEASE = lease_gpus(int(gpus))
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return logging.getLogger("skillmix")


def temporary_sibling(path: Path) -> Path:
    """`.<name>.tmp-<pid>` beside `path`, after removing what earlier attempts left there.

    A job killed with SIGKILL cannot clean up; Snakemake never runs two jobs that write the same
    output at once, so any other temporary sibling of `path` is debris of a dead attempt.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    for old in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)
    return tmp


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path that replaces `path` only if the block succeeds."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces `path` only if the block succeeds."""
    path = Path(path)
    tmp = temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike, stamp: dict[str, Any] | None = None) -> None:
    """Write a table as Parquet, with the settings it was made with (`skillmix.infra.stamps`) when
    given; the file appears only when complete."""
    from skillmix.infra.stamps import write_stamped_parquet

    with atomic_file(path) as tmp:
        write_stamped_parquet(frame, tmp, stamp)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON (indented); the file appears only when complete."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_html_table(frame: pd.DataFrame, path: str | os.PathLike, title: str, digits: int = 3) -> None:
    """Write a table as a small standalone HTML page (for the report); it appears only when complete."""
    body = frame.to_html(index=False, float_format=lambda x: f"{x:.{digits}f}", border=0)
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>table{{border-collapse:collapse;font-family:sans-serif}}"
        "td,th{padding:4px 10px;border-bottom:1px solid #ccc;text-align:right}</style></head>"
        f"<body><h3>{title}</h3>\n{body}\n</body></html>\n"
    )
    with atomic_file(path) as tmp:
        tmp.write_text(page, encoding="utf-8")


class JobClock:
    """Wall time, device and peak GPU memory of a job, for its metrics JSON."""

    def __init__(self, device: torch.device) -> None:
        import torch

        self.device = device
        self.t0 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def metrics(self, **extra: Any) -> dict[str, Any]:
        """The measurements so far, merged with `extra`."""
        import torch

        out: dict[str, Any] = {
            "wall_seconds": round(time.perf_counter() - self.t0, 3),
            "device": str(self.device),
        }
        if self.device.type == "cuda":
            out["gpu_name"] = torch.cuda.get_device_name(self.device)
            out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        out.update(extra)
        return out


def parse_scatteritem(item: str) -> tuple[int, int]:
    """(index, count) of a Snakemake scatter item such as "3-of-8" (index 1-based)."""
    m = re.fullmatch(r"(\d+)-of-(\d+)", str(item))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise SkillmixInputError(f"shard {item!r}: expected '<i>-of-<n>' with 1 <= i <= n")
    return int(m.group(1)), int(m.group(2))


def shard_range(n_rows: int, index: int, count: int) -> tuple[int, int]:
    """Rows [start, stop) of shard `index` (1-based) of `count` equal contiguous shards."""
    if count < 1 or not 1 <= index <= count:
        raise SkillmixInputError(f"shard {index} of {count} is out of range")
    return n_rows * (index - 1) // count, n_rows * index // count
