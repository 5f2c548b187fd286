"""Jobs forked from a warm process that has already imported their libraries (config `jobs`).

Most of a small job's CPU time is spent importing torch, transformers and pandas, again in every
job. With warm start, the first job of a run starts a server that imports those libraries once
(:data:`PRELOAD`) and listens on a Unix socket in a folder only this user can open. Each job then
connects and hands over its standard streams, working folder, environment, import path and job
function; the server forks a child that runs the function as the job itself would have (the
same log, threads, outputs and exit status) and the job waits for it, then exits with its status.
If the job is killed, its child kills itself.

Only third-party libraries are preloaded: skillmix is imported afresh in every child, so edited
code takes effect at once. A server serves one interpreter, import path, set of installed
packages and import-time environment (its key); a change of any starts another. A server exits
after `idle` seconds without jobs. Warm start is never used where CUDA could be (a machine with
NVIDIA or AMD GPU devices: CUDA does not survive a fork), for a job of several processes, or (in
the `auto` setting) inside a SLURM job. Where no server can be had the job runs cold, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import importlib
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

PRELOAD: tuple[str, ...] = (
    "numpy",
    "pyarrow.parquet",
    "pandas",
    "torch",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "safetensors.torch",
)
"""What a server imports once: the third-party libraries of the jobs that run in numbers."""

ENV_PREFIXES = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "PYTORCH", "CUDA", "OMP_", "MKL", "KMP_")
ENV_PREFIXES += ("OPENBLAS", "TOKENIZERS", "PYTHON", "LD_", "MPL", "XDG_", "HOME")
"""Environment variables libraries may read when imported: part of a server's key."""

STARTUP_LIMIT = 300.0
"""Seconds a job waits for a new server to import its libraries before running cold."""

CHILD_MARK = "SKILLMIX_WARM_SERVER"
"""Set in a warm job's environment (to its server's process id)."""

SOCKET_PATH_LIMIT = 96
"""Longest socket path used (Linux allows 107 bytes; the server binds it with a suffix first)."""

_HEADER = struct.Struct("!Q")
_FINISHED = threading.Event()  # in a child: the job has ended and its status is being sent


def warm_wanted(setting: str, processes: int | None = 1) -> bool:
    """Whether a job of `processes` processes starts warm under config `jobs.warm_start`."""
    if setting == "never" or (processes or 1) > 1 or CHILD_MARK in os.environ:
        return False
    if setting == "auto" and "SLURM_JOB_ID" in os.environ:
        return False
    return not _gpu_devices()


def _gpu_devices() -> bool:
    """Whether this machine has devices that CUDA or ROCm could open."""
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()


def server_key(preload: tuple[str, ...]) -> str:
    """What a server's imports depend on, hashed: interpreter, import path (without the job
    script's own folder), the folders' modification times (a package installed or removed
    changes them), the import-time environment and the preload list."""
    path = [p for p in sys.path[1:] if p]
    stamps = []
    for p in path:
        with contextlib.suppress(OSError):
            stamps.append(os.stat(p).st_mtime_ns)
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIXES))
    blob = json.dumps([sys.executable, sys.version, path, stamps, env, list(preload)])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def socket_folder() -> Path | None:
    """This user's folder of server sockets (created private), or None when it is not private."""
    folder = Path(tempfile.gettempdir()) / f"skillmix-warm-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    st = folder.lstat()
    if not folder.is_dir() or folder.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return folder


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def connect_server(idle: float, preload: tuple[str, ...] | None = None) -> socket.socket | None:
    """A connection to this process's server (the one of its :func:`server_key`), started with
    `preload` (:data:`PRELOAD` by default) if none runs; None where none can be had."""
    preload = preload or PRELOAD
    folder = socket_folder()
    if folder is None:
        return None
    key = server_key(preload)
    path = folder / f"{key}.sock"
    if len(os.fsencode(path)) > SOCKET_PATH_LIMIT:
        return None
    sock = _connect(path)
    if sock is not None:
        return sock
    log = folder / f"{key}.log"  # the server's output; a lock while a job starts it
    with open(log, "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one job starts the server; the others wait for it
        sock = _connect(path)
        if sock is not None:
            return sock
        path.unlink(missing_ok=True)  # a dead server's socket
        with open(log, "ab") as out:  # opened again: the server must not hold the lock
            server = subprocess.Popen(
                [sys.executable, "-m", "skillmix.infra.warm", str(path), str(idle), *preload],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_LIMIT
        while time.monotonic() < deadline and server.poll() is None:
            sock = _connect(path)
            if sock is not None:
                return sock
            time.sleep(0.02)
    return None


def _send(sock: socket.socket, payload: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(payload).encode()
    if fds:
        socket.send_fds(sock, [_HEADER.pack(len(data))], fds)
    else:
        sock.sendall(_HEADER.pack(len(data)))
    sock.sendall(data)


def _receive_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _receive(sock: socket.socket, maxfds: int = 0) -> tuple[dict, list[int]]:
    head, fds = b"", []
    if maxfds:
        head, fds, _, _ = socket.recv_fds(sock, _HEADER.size, maxfds)
    (n,) = _HEADER.unpack(head + _receive_exactly(sock, _HEADER.size - len(head)))
    return json.loads(_receive_exactly(sock, n)), list(fds)


def run_warm(
    request: dict[str, Any], idle: float, preload: tuple[str, ...] | None = None
) -> dict[str, Any] | None:
    """Run `request` (see :func:`run_request`) in a child of a warm server; its status
    (`rc`, the exit status, and `cpu`, the child's CPU seconds), or None where no server could
    be had (nothing ran)."""
    if CHILD_MARK in os.environ:  # a job inside a warm job runs cold: no chains of servers
        return None
    try:
        json.dumps(request)
    except (TypeError, ValueError):
        return None
    sock = connect_server(idle, preload)
    if sock is None:
        return None
    with sock:
        full = {**request, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path, "argv": sys.argv}
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            _send(sock, full, [0, 1, 2])
        except OSError:  # the server went before it took the job: nothing ran
            return None
        try:
            status, _ = _receive(sock)
        except (EOFError, OSError):
            print("skillmix: the job's process ended without an exit status", file=sys.stderr)
            return {"rc": 1, "cpu": None}
    return status


def run_request(request: dict[str, Any]) -> None:
    """What every job does, warm or cold: its log (`log`, `threads`, `gpus`), its job function
    (`target`, ``module:function``) imported, then run with `kwargs`; in several processes only
    where the request has `processes` (the rule's resource, see
    :func:`skillmix.infra.processes.job_processes`), else in one."""
    gc.disable()  # the imports make many objects and no garbage
    from skillmix.infra.jobs import start_log

    start_log(request["log"], request.get("threads"), request.get("gpus"))
    from skillmix.infra.processes import job_processes, launch, resolve

    target = resolve(request["target"])
    gc.freeze()  # what the imports made is never collected: later collections skip it
    gc.enable()
    gpus = int(request.get("gpus") or 0)
    processes = job_processes(request["processes"], gpus) if "processes" in request else 1
    launch(target, request["kwargs"], processes, request.get("threads"))


def run_job(request: dict[str, Any], jobs_cfg: dict[str, Any]) -> None:
    """A workflow job: warm when config `jobs` wants it and a server can be had, else here.
    Exits with the job's status when it ran warm and failed."""
    if warm_wanted(jobs_cfg["warm_start"], request.get("processes")):
        status = run_warm(request, jobs_cfg["warm_idle"])
        if status is not None:
            if status["rc"]:
                raise SystemExit(status["rc"])
            return
    run_request(request)


def run_workflow_job(smk: Any, target: str, kwargs: dict[str, Any]) -> None:
    """A workflow script's job (`smk`: its `snakemake` object): `target` run with `kwargs`, with
    the rule's log, threads and GPUs, and its processes where the rule has that resource."""
    request = {"target": target, "kwargs": kwargs, "log": smk.log[0], "threads": smk.threads}
    request["gpus"] = smk.resources.gpu
    if "processes" in smk.resources.keys():
        request["processes"] = smk.resources.processes
    run_job(request, smk.config["jobs"])


def serve(path: str, idle: float, preload: tuple[str, ...] = PRELOAD) -> None:
    """The server: import `preload`, then fork a child for every job that connects; exit after
    `idle` seconds without a job and without children."""
    gc.disable()
    for module in preload:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    gc.freeze()
    gc.enable()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return  # a fork would inherit a CUDA context; jobs run cold
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = f"{path}.{os.getpid()}"
    listener.bind(staging)
    listener.listen(64)
    os.replace(staging, path)  # jobs see the socket only once it listens
    inode = os.stat(path).st_ino
    listener.settimeout(0.5)
    children: set[int] = set()
    last = time.monotonic()
    while True:
        _reap(children)
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if not children and time.monotonic() - last > idle:
                break
            continue
        last = time.monotonic()
        conn.settimeout(None)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            listener.close()
            _child(conn)
        children.add(pid)
        conn.close()
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            os.unlink(path)


def _reap(children: set[int]) -> None:
    """Forget the children that have ended (and collect their status)."""
    for pid in list(children):
        try:
            ended = os.waitpid(pid, os.WNOHANG)[0]
        except ChildProcessError:
            ended = pid
        if ended:
            children.discard(pid)


def _child(conn: socket.socket) -> None:
    """A forked job: take over the job's streams and setting, run it, report, exit."""
    rc = 1
    try:
        _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        request, fds = _receive(conn, maxfds=3)
        if uid != os.getuid() or len(fds) != 3:
            os._exit(1)
        for number, fd in enumerate(fds):
            os.dup2(fd, number)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[CHILD_MARK] = str(os.getppid())
        sys.path[:] = request["path"]
        sys.argv[:] = request["argv"]
        for name in [m for m in sys.modules if m == "skillmix" or m.startswith("skillmix.")]:
            del sys.modules[name]  # the library afresh: its code may have changed
        threading.Thread(target=_die_with_job, args=(conn,), daemon=True).start()
        rc = _run_guarded(request)
    except BaseException:
        traceback.print_exc()
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _FINISHED.set()
        with contextlib.suppress(BaseException):
            _send(conn, {"rc": rc, "cpu": usage.ru_utime + usage.ru_stime})
        os._exit(rc)


def _run_guarded(request: dict[str, Any]) -> int:
    """Run the job as a Python process would: a traceback on stderr and status 1 for an
    exception, a SystemExit's status; exit handlers run and streams flushed."""
    try:
        run_request(request)
        rc = 0
    except SystemExit as stop:
        rc = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if stop.code is not None and not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        rc = 1
    import logging

    usage = resource.getrusage(resource.RUSAGE_SELF)
    logging.getLogger("skillmix.infra.warm").info(
        "started warm: ran in process %d, forked from the warm server %d; %.1f s CPU, peak memory %.0f MB "
        "(the job's benchmark file counts its own process only)",
        os.getpid(),
        os.getppid(),
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
    )
    with contextlib.suppress(BaseException):
        import atexit

        atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return rc


def _die_with_job(conn: socket.socket) -> None:
    """End this child when its job's process goes (killed, or Snakemake cancelled it)."""
    with contextlib.suppress(OSError):
        while conn.recv(1):
            pass
    if not _FINISHED.is_set():
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    serve(sys.argv[1], float(sys.argv[2]), tuple(sys.argv[3:]))
