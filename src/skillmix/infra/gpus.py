"""Which GPUs a job may use: leases of free GPUs on one machine, one lock file per GPU.

Snakemake's `--resources gpu=N` caps how many GPUs the running jobs ask for in total, but never
says *which* GPU a job should use (snakemake issue 281), so without help every job would run on
GPU 0. Before torch initialises CUDA, a job takes non-blocking `flock` locks on free GPUs of the
pool (`SKILLMIX_GPU_POOL`, else `CUDA_VISIBLE_DEVICES`, else the GPUs `nvidia-smi -L` lists),
sets `CUDA_VISIBLE_DEVICES` to them, and keeps the locks until the process ends: the kernel
drops a `flock` when its process dies, `kill -9` included, so a crashed job never holds a GPU.
Under SLURM, which already set `CUDA_VISIBLE_DEVICES` for the job's allocation, nothing changes.
A job that asks for no GPU sees none (`CUDA_VISIBLE_DEVICES` empty), so it cannot take one that
another job leased. The lock folder belongs to the user alone (mode 0o700, checked before use), so
another account cannot plant, link or hold its lock files.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)

POOL_ENV = "SKILLMIX_GPU_POOL"
LOCK_DIR_ENV = "SKILLMIX_GPU_LOCK_DIR"
WAIT_ENV = "SKILLMIX_GPU_WAIT"
DEFAULT_WAIT_SECONDS = float("inf")  # queue for a GPU until one is free
SYSTEM_TMP = Path("/tmp")  # not $TMPDIR, which may differ between jobs that share the machine's GPUs
DIR_MODE = 0o700
LOCK_MODE = 0o600


def per_user_lock_dir() -> Path:
    """The default lock folder: one per user in the system temp folder, machine-wide, so that two
    workflows of one user on one machine do not share a GPU either."""
    return SYSTEM_TMP / f"skillmix-gpu-locks-{os.getuid()}"


def default_lock_dir(environ: dict[str, str] | None = None) -> Path:
    """Where the per-GPU lock files live: `SKILLMIX_GPU_LOCK_DIR` (in `environ`, default the process
    environment), else `per_user_lock_dir()`."""
    env = os.environ if environ is None else environ
    return Path(env.get(LOCK_DIR_ENV) or per_user_lock_dir())


def _lock_dir_problem(folder: Path, forbidden: int) -> str | None:
    """What makes `folder` unsafe for lock files (`forbidden`: mode bits it must not have), or None."""
    try:
        info = os.lstat(folder)
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != os.getuid():
        return f"is owned by uid {info.st_uid}, not by the current user (uid {os.getuid()})"
    mode = stat.S_IMODE(info.st_mode)
    if mode & forbidden:
        kind = "permissions" if forbidden == 0o077 else "write permission"
        return f"has mode {mode:#o}: group/other {kind} (expected {DIR_MODE:#o}, `chmod 700` it)"
    return None


def check_lock_dir(folder: str | os.PathLike) -> Path:
    """Create the lock folder with mode 0o700 if missing, and refuse one that is a symbolic link, not a
    directory, owned by another user, or open to others: the per-user default must have no group or
    other permissions at all, a chosen folder (`SKILLMIX_GPU_LOCK_DIR`) no group or other write."""
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=DIR_MODE)
        os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask
    except FileExistsError:
        pass
    except OSError as error:
        raise SkillmixInputError(
            f"GPU lock folder {folder}: cannot be created ({error.strerror}); "
            f"set {LOCK_DIR_ENV} to a folder of your own (mode 0o700)"
        ) from error
    forbidden = 0o077 if folder == per_user_lock_dir() else 0o022
    problem = _lock_dir_problem(folder, forbidden)
    if problem is not None and forbidden == 0o077 and _lock_dir_problem(folder, 0o022) is None:
        # the user's own default folder, writable by them alone (as earlier versions made it, mode
        # 0o755): closing it to others is safe
        os.chmod(folder, DIR_MODE)
        problem = None
    if problem is not None:
        raise SkillmixInputError(
            f"GPU lock folder {folder} {problem}; lock files must live in a real directory that only "
            f"you can write; set {LOCK_DIR_ENV} to another folder of your own (mode 0o700)"
        )
    return folder


def detected_gpus() -> list[str]:
    """The GPU indices `nvidia-smi -L` lists (none without the tool or a driver)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    return [str(i) for i in range(len(lines))] if out.returncode == 0 else []


def gpu_pool(environ: dict[str, str] | None = None) -> list[str]:
    """The GPU ids jobs on this machine share: `SKILLMIX_GPU_POOL` or `CUDA_VISIBLE_DEVICES`
    (comma-separated ids or UUIDs; set but empty means none), else the detected GPUs."""
    env = os.environ if environ is None else environ
    for name in (POOL_ENV, "CUDA_VISIBLE_DEVICES"):
        value = env.get(name)
        if value is not None:  # set, even empty (no GPUs)
            return [v.strip() for v in value.split(",") if v.strip()]
    return detected_gpus()


@dataclass
class GpuLease:
    """GPUs held by this process: their ids and the open lock files (closing them releases)."""

    ids: list[str]
    handles: list = field(default_factory=list)
    source: str = "lease"

    def release(self) -> None:
        """Give the GPUs back (also happens when the process ends, however it ends)."""
        for handle in self.handles:
            try:
                fcntl.flock(handle, fcntl.LOCK_UN)
            finally:
                handle.close()
        self.handles.clear()


def _lock_name(gpu: str) -> str:
    return "gpu-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in gpu) + ".lock"


def _open_lock(path: Path):
    """The lock file at `path`, opened for writing (created with mode 0o600; never a symbolic link)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, LOCK_MODE)
    except OSError as error:
        raise SkillmixInputError(
            f"GPU lock file {path}: cannot be opened ({error.strerror}; a symbolic link is refused); "
            f"remove it or set {LOCK_DIR_ENV} to another folder of your own (mode 0o700)"
        ) from error
    return os.fdopen(fd, "r+")


def try_lease(n: int, pool: list[str], lock_dir: str | os.PathLike) -> GpuLease | None:
    """Lock `n` free GPUs of `pool` at once, or none (returns None when fewer than `n` are free).

    `lock_dir` is created if missing and checked first (`check_lock_dir`).
    """
    lock_dir = check_lock_dir(lock_dir)
    held = GpuLease([])
    for gpu in pool:
        if len(held.ids) == n:
            break
        handle = _open_lock(lock_dir / _lock_name(gpu))  # held while the job runs
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        held.ids.append(gpu)
        held.handles.append(handle)
    if len(held.ids) == n:
        return held
    held.release()
    return None


def lease_gpus(
    n: int,
    environ: dict[str, str] | None = None,
    lock_dir: str | os.PathLike | None = None,
    wait_seconds: float | None = None,
    poll_seconds: float = 0.5,
) -> GpuLease:
    """Lease `n` GPUs for this job and point `CUDA_VISIBLE_DEVICES` (in `environ`, default the
    process environment) at them. Call before torch initialises CUDA.

    n = 0: the job sees no GPU. Under SLURM (`SLURM_JOB_ID` set) with `CUDA_VISIBLE_DEVICES`
    already set, the scheduler's choice is kept. Otherwise waits up to `wait_seconds`
    (`SKILLMIX_GPU_WAIT`; by default until GPUs are free: without `--resources gpu=N` more GPU
    jobs may start than there are GPUs, and they queue here) for `n` GPUs of the pool, then
    fails; a pool smaller than `n` fails at once, naming the pool.
    """
    env = os.environ if environ is None else environ
    if n < 0:
        raise SkillmixInputError(f"a job cannot ask for {n} GPUs")
    if env.get("SLURM_JOB_ID"):
        log.info("running as SLURM job %s on %s", env["SLURM_JOB_ID"], env.get("SLURMD_NODENAME", "?"))
    if env.get("SLURM_JOB_ID") and env.get("CUDA_VISIBLE_DEVICES") is not None:
        ids = [v for v in env["CUDA_VISIBLE_DEVICES"].split(",") if v]
        log.info("GPUs set by SLURM job %s: CUDA_VISIBLE_DEVICES=%s", env["SLURM_JOB_ID"], ",".join(ids))
        return GpuLease(ids, source="slurm")
    if n == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
        return GpuLease([], source="none")
    pool = gpu_pool(env)
    if not pool:
        log.info("the job asks for %d GPU(s) but this machine has none; it runs on the CPU", n)
        env["CUDA_VISIBLE_DEVICES"] = ""
        return GpuLease([], source="none")
    if len(pool) < n:
        raise SkillmixInputError(f"the job asks for {n} GPU(s) but the GPU pool has {len(pool)}: {pool}")
    folder = Path(lock_dir) if lock_dir is not None else default_lock_dir(env)
    wait = float(env.get(WAIT_ENV, DEFAULT_WAIT_SECONDS)) if wait_seconds is None else wait_seconds
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        lease = try_lease(n, pool, folder)
        if lease is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(lease.ids)
            log.info("leased GPU(s) %s of pool %s (locks in %s)", ",".join(lease.ids), ",".join(pool), folder)
            return lease
        if not waiting:
            log.info("waiting for %d free GPU(s) of pool %s (locks in %s)", n, ",".join(pool), folder)
            waiting = True
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"no {n} free GPU(s) in pool {pool} after {wait:.0f} s (locks in {folder}); "
                "is --resources gpu larger than the number of GPUs?"
            )
        time.sleep(poll_seconds)
