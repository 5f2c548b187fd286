"""GPU leases: no two jobs on one machine ever share a GPU (fake GPU ids, real processes)."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from skillmix.infra import gpus
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.gpus import check_lock_dir, default_lock_dir, gpu_pool, lease_gpus, try_lease

HOLDER = textwrap.dedent(
    """
    import json, os, sys, time
    from skillmix.infra.gpus import lease_gpus
    n, hold, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    lease = lease_gpus(n, poll_seconds=0.02)
    start = time.time()
    print("leased", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    time.sleep(hold)
    end = time.time()
    with open(out, "a") as f:
        row = {"ids": lease.ids, "env": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": end}
        f.write(json.dumps(row) + "\\n")
    """
)


def env_for(tmp_path: Path, pool: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "CUDA_VISIBLE_DEVICES"}
    env.update(
        {
            "SKILLMIX_GPU_POOL": pool,
            "SKILLMIX_GPU_LOCK_DIR": str(tmp_path / "locks"),
            "SKILLMIX_GPU_WAIT": "60",
        }
    )
    return env


def test_no_gpu_job_sees_none_and_slurm_keeps_its_choice(tmp_path):
    env = {"SKILLMIX_GPU_POOL": "0,1"}
    lease = lease_gpus(0, env, tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and lease.ids == []
    slurm = {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "1", "SKILLMIX_GPU_POOL": "0,1"}
    lease = lease_gpus(1, slurm, tmp_path)
    assert lease.source == "slurm" and lease.ids == ["1"] and slurm["CUDA_VISIBLE_DEVICES"] == "1"
    assert not list(tmp_path.glob("*.lock"))  # SLURM's allocation is not locked again


def test_pool_sources():
    assert gpu_pool({"SKILLMIX_GPU_POOL": "2, 3", "CUDA_VISIBLE_DEVICES": "0"}) == ["2", "3"]
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}) == ["GPU-aa", "GPU-bb"]
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": ""}) == []  # set but empty: no GPUs


def test_leases_are_exclusive_until_released(tmp_path):
    env = {"SKILLMIX_GPU_POOL": "0,1,2"}
    first = lease_gpus(2, env, tmp_path, wait_seconds=0)
    assert first.ids == ["0", "1"] and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert try_lease(2, ["0", "1", "2"], tmp_path) is None  # only GPU 2 is free
    with pytest.raises(TimeoutError, match="no 2 free GPU"):
        lease_gpus(2, dict(env), tmp_path, wait_seconds=0.1, poll_seconds=0.02)
    other = lease_gpus(1, dict(env), tmp_path, wait_seconds=0)
    assert other.ids == ["2"]
    first.release()
    again = lease_gpus(2, dict(env), tmp_path, wait_seconds=0)
    assert again.ids == ["0", "1"]
    with pytest.raises(SkillmixInputError, match="pool has 3"):
        lease_gpus(4, dict(env), tmp_path)


def test_concurrent_jobs_never_share_a_gpu(tmp_path):
    """8 processes ask for 1 GPU of a pool of 2 at once: each GPU is held by one at a time."""
    out = tmp_path / "intervals.jsonl"
    env = env_for(tmp_path, "0,1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HOLDER, "1", "0.3", str(out)], env=env, stdout=subprocess.PIPE
        )
        for _ in range(8)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(r["env"] == r["ids"][0] for r in rows)
    assert {r["env"] for r in rows} == {"0", "1"}
    for gpu in ("0", "1"):
        spans = sorted((r["start"], r["end"]) for r in rows if r["env"] == gpu)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end, f"GPU {gpu} was held by two jobs at once: {spans}"


def test_a_killed_job_gives_its_gpu_back(tmp_path):
    env = env_for(tmp_path, "0")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "1", "60", str(tmp_path / "x.jsonl")],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "leased 0"
    assert try_lease(1, ["0"], tmp_path / "locks") is None
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    deadline = time.monotonic() + 10
    lease = None
    while lease is None and time.monotonic() < deadline:
        lease = try_lease(1, ["0"], tmp_path / "locks")
    assert lease is not None and lease.ids == ["0"]


def test_workflow_gpu_jobs_lease_distinct_gpus(tmp_path, monkeypatch):
    """The tiny brute-force graph with two fake GPUs and --resources gpu=2: every graph run leases
    one GPU, two run at once, and the time spans in which a GPU is held never overlap."""
    from datetime import datetime

    from workflow_helpers import run_ok

    monkeypatch.setenv("SKILLMIX_GPU_POOL", "0,1")
    monkeypatch.setenv("SKILLMIX_GPU_LOCK_DIR", str(tmp_path / "locks"))
    work = tmp_path / "work"
    work.mkdir()
    run_ok(work, "results/graph/brute_force/adjacency.npy", "--resources", "gpu=2")
    stamp = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
    spans = {"0": [], "1": []}
    for log in sorted((work / "logs/graph_run").rglob("*.log")):
        text = log.read_text()
        leased = re.search(r"^(\S+ \S+) \S+ INFO: leased GPU\(s\) (\d) of pool 0,1", text, re.M)
        assert leased, f"{log}: no GPU lease\n{text[:1500]}"
        times = [
            datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
            for m in map(stamp.match, text.splitlines())
            if m
        ]
        spans[leased.group(2)].append((times[0], times[-1]))
    assert sum(len(v) for v in spans.values()) == 6
    assert spans["0"] and spans["1"]  # both GPUs were used
    for gpu, held in spans.items():
        held.sort()
        for (_, end), (start, _) in zip(held, held[1:], strict=False):
            assert start >= end, f"GPU {gpu} was leased twice at once: {held}"
    slice_log = (
        (work / "logs/slice/slice.log").read_text() if (work / "logs/slice/slice.log").exists() else ""
    )
    assert "leased GPU" not in slice_log  # a CPU job takes no GPU


# ------------------------------------------------------------------------------------------
# the lock folder


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_default_lock_dir_is_per_user_in_the_system_temp_folder():
    folder = default_lock_dir({})
    assert folder.parent == Path("/tmp") and str(os.getuid()) in folder.name
    assert default_lock_dir({"SKILLMIX_GPU_LOCK_DIR": "/x/y"}) == Path("/x/y")


def test_created_folder_is_private_and_lock_files_too(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus, "SYSTEM_TMP", tmp_path)  # the per-user default, under a test folder
    old_umask = os.umask(0o002)  # a lax umask must not widen the modes
    try:
        default = default_lock_dir({})
        lease = try_lease(1, ["0"], default)
        chosen = tmp_path / "chosen" / "locks"
        other = try_lease(1, ["0"], chosen)
    finally:
        os.umask(old_umask)
    assert lease is not None and other is not None
    assert mode_of(default) == 0o700 and mode_of(chosen) == 0o700
    assert mode_of(default / "gpu-0.lock") == 0o600 and mode_of(chosen / "gpu-0.lock") == 0o600
    lease.release()
    other.release()


def test_symlinked_lock_folder_is_refused(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(SkillmixInputError, match=rf"{link} is a symbolic link.*SKILLMIX_GPU_LOCK_DIR"):
        try_lease(1, ["0"], link)
    monkeypatch.setattr(gpus, "SYSTEM_TMP", tmp_path)  # the default folder planted as a link
    default = default_lock_dir({})
    default.symlink_to(real)
    with pytest.raises(SkillmixInputError, match="is a symbolic link"):
        lease_gpus(1, {"SKILLMIX_GPU_POOL": "0"}, wait_seconds=0)
    assert not list(real.iterdir())  # nothing was written through the link


def test_lock_folder_open_to_others_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    env = {"SKILLMIX_GPU_POOL": "0", "SKILLMIX_GPU_LOCK_DIR": str(shared)}
    with pytest.raises(SkillmixInputError, match=r"has mode 0o777: group/other write.*SKILLMIX_GPU_LOCK_DIR"):
        lease_gpus(1, env, wait_seconds=0)
    os.chmod(shared, 0o755)  # a chosen folder may be readable by others, never writable
    lease = lease_gpus(1, env, wait_seconds=0)
    assert lease.ids == ["0"]
    lease.release()
    monkeypatch.setattr(gpus, "SYSTEM_TMP", tmp_path)
    default = default_lock_dir({})
    default.mkdir(mode=0o755)
    os.chmod(default, 0o755)  # the user's default folder as earlier versions made it: closed, then used
    try_lease(1, ["0"], default).release()
    assert stat.S_IMODE(default.stat().st_mode) == 0o700
    os.chmod(default, 0o775)  # writable by the group: someone else may have planted lock files
    with pytest.raises(SkillmixInputError, match=r"has mode 0o775: group/other permissions"):
        try_lease(1, ["0"], default)


def test_lock_folder_of_another_user_or_a_file_is_refused(tmp_path, monkeypatch):
    folder = check_lock_dir(tmp_path / "mine")
    monkeypatch.setattr(gpus.os, "getuid", lambda: os.stat(folder).st_uid + 1)
    with pytest.raises(SkillmixInputError, match=r"is owned by uid \d+, not by the current user"):
        check_lock_dir(folder)
    monkeypatch.undo()
    (tmp_path / "file").write_text("")
    with pytest.raises(SkillmixInputError, match="is not a directory"):
        check_lock_dir(tmp_path / "file")
