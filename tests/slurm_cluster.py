"""A single-node SLURM on loopback for tests: munge, slurmctld and slurmd with two fake GPUs.

Follows ../shared/specs/snakemake.md §8: Debian's slurm-wlm and munge, run as root, the config at
the default path /etc/slurm/slurm.conf (the jobstep plugin drops SLURM_CONF), no accounting,
GPUs as gres.conf lines with File=/dev/null and /dev/zero. `SlurmdParameters=config_overrides`
lets the node advertise the CPUs and memory the production profile asks for (16 CPUs, 64 GB)
on a small machine. `stop()` ends every daemon it started and removes the files it wrote.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CONF_DIR = Path("/etc/slurm")
MARKER = "# written by skillmix tests/slurm_cluster.py"
BINARIES = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")


def missing_requirements() -> str | None:
    """Why a loopback SLURM cannot start here, or None."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"SLURM/munge binaries not found: {absent} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the loopback SLURM runs its daemons as root"
    for name in ("slurm.conf", "gres.conf"):
        path = CONF_DIR / name
        if path.exists() and MARKER not in path.read_text(errors="replace"):
            return f"{path} exists and is not a test file; refusing to replace a real SLURM config"
    return None


class LoopbackSlurm:
    """Start with `start()`, stop with `stop()`; `host` is the node name (hostname -s)."""

    def __init__(self, root: Path, cpus: int = 16, memory_mb: int = 64000, gpus: int = 2) -> None:
        self.root = Path(root)
        self.cpus, self.memory_mb, self.gpus = cpus, memory_mb, gpus
        self.host = socket.gethostname().split(".")[0]
        self.socket = self.root / "munge" / "munge.sock"
        self.written: list[Path] = []

    def _conf(self) -> str:
        r = self.root
        return "\n".join(
            [
                MARKER,
                "ClusterName=skillmixtest",
                f"SlurmctldHost={self.host}(127.0.0.1)",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={self.socket}",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"StateSaveLocation={r}/state",
                f"SlurmdSpoolDir={r}/spool",
                f"SlurmctldPidFile={r}/slurmctld.pid",
                f"SlurmdPidFile={r}/slurmd.pid",
                f"SlurmctldLogFile={r}/slurmctld.log",
                f"SlurmdLogFile={r}/slurmd.log",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "MpiDefault=none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "SlurmdParameters=config_overrides",
                "ReturnToService=2",
                "MinJobAge=300",
                "GresTypes=gpu",
                f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
                f"Gres=gpu:{self.gpus} State=UNKNOWN",
                f"PartitionName=cpu Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
                f"PartitionName=gpu Nodes={self.host} MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def _gres(self) -> str:
        devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random"][: self.gpus]
        lines = [MARKER] + [f"NodeName={self.host} Name=gpu File={d}" for d in devices]
        return "\n".join(lines) + "\n"

    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.written.append(path)

    def start(self, timeout: float = 90.0) -> None:
        """Start munged, slurmctld and slurmd and wait until the node is idle."""
        reason = missing_requirements()
        if reason:
            raise RuntimeError(reason)
        for sub in ("state", "spool", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        munge_dir = self.root / "munge"
        munge_dir.chmod(0o700)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        subprocess.run(
            [
                "munged",
                "--force",
                f"--key-file={key}",
                f"--socket={self.socket}",
                f"--pid-file={munge_dir}/munged.pid",
                f"--log-file={munge_dir}/munged.log",
                f"--seed-file={munge_dir}/munged.seed",
            ],
            check=True,
            capture_output=True,
        )
        cred = subprocess.run(["munge", "-S", str(self.socket), "-n"], check=True, capture_output=True)
        subprocess.run(
            ["unmunge", "-S", str(self.socket)], input=cred.stdout, check=True, capture_output=True
        )
        self._write(CONF_DIR / "slurm.conf", self._conf())
        self._write(CONF_DIR / "gres.conf", self._gres())
        subprocess.run(["slurmctld"], check=True, capture_output=True)
        subprocess.run(["slurmd"], check=True, capture_output=True)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
            state = out.stdout.strip()
            if out.returncode == 0 and state.startswith("idle"):
                return
            time.sleep(1)
        self.stop()
        raise RuntimeError(
            f"the loopback SLURM node did not become idle in {timeout:.0f} s (state {state!r})"
        )

    def _kill(self, pid_file: Path) -> None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Cancel the jobs, stop the daemons this object started, remove the config files."""
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True)
        self._kill(self.root / "slurmd.pid")
        self._kill(self.root / "slurmctld.pid")
        self._kill(self.root / "munge" / "munged.pid")
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written.clear()
