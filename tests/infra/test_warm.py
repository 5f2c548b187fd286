"""Warm start (skillmix.infra.warm): jobs forked from a server that has imported their libraries
run as the job itself would, with its streams, folder, environment, log and exit status; they die
with their job; servers are private, keyed by what their imports depend on, and end when idle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from skillmix.infra import warm

LIGHT = ("json",)
"""A server preload that starts in a blink (the real one imports torch and transformers)."""

JOBS = textwrap.dedent(
    """
    import json, logging, os, sys, time

    def report(out):
        logging.getLogger("warm_jobs").info("hello from the job")
        print("to stdout", flush=True)
        info = {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
                "env": os.environ.get("WARM_TEST_VALUE"), "argv": sys.argv}
        with open(out, "w") as f:
            json.dump(info, f)

    def fail():
        raise ValueError("the job's own error")

    def stop(code):
        sys.exit(code)

    def nested(out):
        from skillmix.infra import warm
        request = {"target": "warm_jobs:report", "kwargs": {"out": out}, "log": "nested.log"}
        assert warm.run_warm(request, 5, ("json",)) is None
        assert not warm.warm_wanted("always")
        report(out)

    def train(out):
        import torch
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
        x, y = torch.randn(64, 16), torch.randn(64, 1)
        for _ in range(20):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        torch.save(model.state_dict(), out)

    def linger(out):
        with open(out, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
    """
)


@pytest.fixture
def jobs(tmp_path, monkeypatch):
    """A private socket folder, an importable module of job functions, a working folder."""
    sockets = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))  # a socket's path is short
    (tmp_path / "sockets").symlink_to(sockets)
    monkeypatch.setattr(warm.tempfile, "gettempdir", lambda: str(sockets))
    code = tmp_path / "code"
    code.mkdir()
    (code / "warm_jobs.py").write_text(JOBS)
    monkeypatch.syspath_prepend(str(code))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("WARM_TEST_VALUE", "from the job's environment")
    yield tmp_path
    for sock in sockets.rglob("*.sock"):  # servers of the test: end them
        _stop_server(sock)
    shutil.rmtree(sockets, ignore_errors=True)


def _stop_server(sock: Path) -> None:
    out = subprocess.run(["pgrep", "-f", str(sock)], capture_output=True, text=True).stdout.split()
    for pid in out:
        os.kill(int(pid), signal.SIGTERM)


def _request(target: str, log: Path, **kwargs) -> dict:
    return {"target": target, "kwargs": kwargs, "log": str(log), "threads": 1}


def test_a_warm_job_runs_in_a_child_of_the_server_as_the_job_would(jobs):
    out = jobs / "work" / "info.json"
    status = warm.run_warm(
        _request("warm_jobs:report", jobs / "work" / "job.log", out="info.json"), 30, LIGHT
    )
    assert status["rc"] == 0 and status["cpu"] > 0
    info = json.loads(out.read_text())  # written relative to the job's folder
    assert info["cwd"] == str(jobs / "work")
    assert info["env"] == "from the job's environment"
    assert info["argv"] == sys.argv
    assert info["pid"] != os.getpid() and info["ppid"] != os.getpid()  # forked by the server
    assert "hello from the job" in (jobs / "work" / "job.log").read_text()
    # a second job reuses the same server
    status = warm.run_warm(
        _request("warm_jobs:report", jobs / "work" / "job2.log", out="info2.json"), 30, LIGHT
    )
    assert json.loads((jobs / "work" / "info2.json").read_text())["ppid"] == info["ppid"]
    assert len(list((jobs / "sockets").resolve().rglob("*.sock"))) == 1


def test_a_job_inside_a_warm_job_runs_cold(jobs):
    request = _request("warm_jobs:nested", jobs / "work" / "job.log", out="info.json")
    status = warm.run_warm(request, 30, LIGHT)
    assert status["rc"] == 0, (jobs / "work" / "job.log").read_text()
    assert len(list((jobs / "sockets").resolve().rglob("*.sock"))) == 1


def test_a_warm_job_computes_what_a_cold_job_computes(jobs, own_log):
    """A few steps of training, cold (in this process) and warm (forked from a server that imported
    torch): the same bytes."""
    log = jobs / "work" / "job.log"
    for folder in ("cold", "warm"):
        (jobs / "work" / folder).mkdir()
    cold = {**_request("warm_jobs:train", log, out="cold/model.pt"), "threads": None}
    warm.run_job(cold, {"warm_start": "never"})
    assert warm.run_warm(_request("warm_jobs:train", log, out="warm/model.pt"), 30, ("torch",))["rc"] == 0
    cold_bytes = (jobs / "work" / "cold" / "model.pt").read_bytes()
    assert (jobs / "work" / "warm" / "model.pt").read_bytes() == cold_bytes


def test_a_failing_job_reports_its_status_and_its_traceback_is_in_its_log(jobs):
    log = jobs / "work" / "job.log"
    assert warm.run_warm(_request("warm_jobs:fail", log), 30, LIGHT)["rc"] == 1
    text = log.read_text()
    assert "Traceback" in text and "ValueError: the job's own error" in text
    assert warm.run_warm(_request("warm_jobs:stop", log, code=3), 30, LIGHT)["rc"] == 3


def test_killing_the_job_kills_its_child(jobs):
    out = jobs / "work" / "pid.txt"
    request = _request("warm_jobs:linger", jobs / "work" / "job.log", out=str(out))
    client = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, json; from skillmix.infra import warm; import tempfile; "
            f"tempfile.gettempdir = lambda: {str((jobs / 'sockets').resolve())!r}; "
            f"sys.path.insert(0, {str(jobs / 'code')!r}); "
            f"warm.run_warm(json.loads({json.dumps(json.dumps(request))}), 30, ('json',))",
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    deadline = time.monotonic() + 30
    while not out.exists() or not out.read_text():
        assert time.monotonic() < deadline and client.poll() is None, "the job never started"
        time.sleep(0.05)
    child = int(out.read_text())
    os.kill(client.pid, signal.SIGKILL)
    client.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and _state(child) != "Z":
        assert time.monotonic() < deadline, "the job's child outlived the job"
        time.sleep(0.05)


def _client(jobs: Path, request: dict, preload: tuple[str, ...]) -> subprocess.Popen:
    """A job's process in its own interpreter, with the test's socket folder and job module."""
    code = (
        "import sys, json, tempfile; from skillmix.infra import warm; "
        f"tempfile.gettempdir = lambda: {str((jobs / 'sockets').resolve())!r}; "
        f"sys.exit(warm.run_warm(json.loads({json.dumps(json.dumps(request))}), 30, {preload!r})['rc'])"
    )
    path = os.pathsep.join([str(jobs / "code"), *sys.path])
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": path})


def test_jobs_that_start_together_share_one_server(jobs):
    """The first job starts the server while the others wait for it (a slow import: a wide window)."""
    (jobs / "code" / "warm_slow.py").write_text("import time\ntime.sleep(1.5)\n")
    log = jobs / "work" / "job.log"
    clients = [
        _client(jobs, _request("warm_jobs:report", log, out=f"info{n}.json"), ("json", "warm_slow"))
        for n in range(3)
    ]
    assert [c.wait(timeout=60) for c in clients] == [0, 0, 0]
    parents = {json.loads((jobs / "work" / f"info{n}.json").read_text())["ppid"] for n in range(3)}
    assert len(parents) == 1


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_an_idle_server_ends_and_removes_its_socket(jobs):
    warm.run_warm(_request("warm_jobs:report", jobs / "work" / "job.log", out="info.json"), 1, LIGHT)
    [sock] = (jobs / "sockets").resolve().rglob("*.sock")
    deadline = time.monotonic() + 20
    while sock.exists():
        assert time.monotonic() < deadline, "the idle server did not end"
        time.sleep(0.1)


def test_a_folder_others_can_open_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(warm.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = tmp_path / f"skillmix-warm-{os.getuid()}"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert warm.socket_folder() is None
    assert warm.run_warm(_request("warm_jobs:report", tmp_path / "log", out="x"), 5, LIGHT) is None
    folder.chmod(0o700)
    assert warm.socket_folder() == folder


def test_a_socket_path_too_long_for_the_system_is_not_used(tmp_path, monkeypatch):
    long = tmp_path / ("x" * 100)
    long.mkdir()
    monkeypatch.setattr(warm.tempfile, "gettempdir", lambda: str(long))
    assert warm.socket_folder() is not None
    assert warm.run_warm(_request("warm_jobs:report", tmp_path / "log", out="x"), 5, LIGHT) is None


def test_a_request_that_is_not_json_runs_cold(jobs):
    assert warm.run_warm(_request("warm_jobs:report", jobs / "log", out=object()), 5, LIGHT) is None


def test_the_key_follows_the_import_time_environment_and_path_not_the_scripts_folder(monkeypatch):
    key = warm.server_key(LIGHT)
    monkeypatch.setenv("SOME_UNRELATED_VARIABLE", "x")
    assert warm.server_key(LIGHT) == key
    monkeypatch.setattr(sys, "path", ["/somewhere/else/scripts", *sys.path[1:]])
    assert warm.server_key(LIGHT) == key
    monkeypatch.setenv("HF_HUB_OFFLINE", "0" if os.environ.get("HF_HUB_OFFLINE") == "1" else "1")
    assert warm.server_key(LIGHT) != key
    assert warm.server_key(("json", "csv")) != warm.server_key(LIGHT)


@pytest.mark.parametrize(
    ("setting", "processes", "slurm", "gpus", "wanted"),
    [
        ("auto", 1, False, False, True),
        ("auto", None, False, False, True),
        ("never", 1, False, False, False),
        ("auto", 2, False, False, False),
        ("auto", 1, True, False, False),
        ("always", 1, True, False, True),
        ("always", 1, False, True, False),
        ("auto", 1, False, True, False),
    ],
)
def test_when_a_job_starts_warm(monkeypatch, setting, processes, slurm, gpus, wanted):
    if slurm:
        monkeypatch.setenv("SLURM_JOB_ID", "7")
    else:
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(warm, "_gpu_devices", lambda: gpus)
    assert warm.warm_wanted(setting, processes) is wanted


@pytest.fixture
def own_log(monkeypatch):
    """A job run in the test's process sends stderr and logging to its log: put them back after."""
    import logging

    monkeypatch.setattr(sys, "stderr", sys.stderr)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_run_job_runs_cold_when_warm_start_is_off(jobs, own_log):
    request = {**_request("warm_jobs:report", jobs / "work" / "job.log", out="info.json"), "threads": None}
    warm.run_job(request, {"warm_start": "never"})
    assert json.loads((jobs / "work" / "info.json").read_text())["pid"] == os.getpid()
    assert not list((jobs / "sockets").resolve().rglob("*.sock"))
    with pytest.raises(ValueError, match="the job's own error"):
        warm.run_job(
            {**_request("warm_jobs:fail", jobs / "work" / "job.log"), "threads": None},
            {"warm_start": "never"},
        )


def test_run_job_exits_with_a_failed_warm_jobs_status(jobs, monkeypatch):
    monkeypatch.setattr(warm, "PRELOAD", LIGHT)
    monkeypatch.setattr(warm, "_gpu_devices", lambda: False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    request = _request("warm_jobs:stop", jobs / "work" / "job.log", code=4)
    with pytest.raises(SystemExit) as stop:
        warm.run_job(request, {"warm_start": "auto", "warm_idle": 5})
    assert stop.value.code == 4
