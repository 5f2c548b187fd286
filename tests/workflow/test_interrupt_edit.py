"""Interrupt, edit a setting, re-run: the result is consistent, or the combining stage refuses.

Snakemake records no metadata for jobs that finish after snakemake itself was interrupted, so a
later change of their settings does not re-run them. Graph assembly compares every run's stamp
(skillmix.infra.stamps) with the settings the config gives now and refuses a mix, naming the stale
runs and the command that removes them; after it, the re-run is consistent.
"""

from __future__ import annotations

import base64
import signal
from pathlib import Path

import pytest
from test_crash import job_pid, start, wait_for
from workflow_helpers import MAIN_CONFIG, TINY_CONFIG, run_ok, snakemake, write_yaml

from skillmix.infra.stamps import read_stamp

ADJACENCY = "results/graph/brute_force/adjacency.npy"
RUNS = "results/graph/brute_force/runs"


def settings(workdir: Path, lr: float) -> list[Path]:
    """Configs of a 2-skill brute-force graph (3 runs) with graph.runs.lr = `lr`."""
    override = {"source": {"lego": {"n_vars": 2}}, "graph": {"runs": {"repeats": 1, "lr": lr}}}
    return [MAIN_CONFIG, TINY_CONFIG, write_yaml(workdir / "override.yaml", override)]


def lrs(workdir: Path) -> dict[str, float]:
    return {p.name: read_stamp(p)["graph.runs"]["lr"] for p in sorted((workdir / RUNS).glob("*.parquet"))}


def forget(workdir: Path, output: Path) -> None:
    """Remove Snakemake's record of the job that made `output` (what an interrupt leaves)."""
    relative = str(output.relative_to(workdir))
    for record in (workdir / ".snakemake" / "metadata").iterdir():
        if base64.urlsafe_b64decode(record.name).decode() == relative:
            record.unlink()
            return
    raise AssertionError(f"no metadata record of {relative}")


@pytest.mark.slow
def test_an_interrupted_graph_then_an_edited_setting_is_never_mixed(tmp_path: Path) -> None:
    # 1. interrupt snakemake (SIGINT, as Ctrl-C) while the second graph run is running
    process = start(tmp_path, ADJACENCY, configs=settings(tmp_path, 0.01))
    wait_for(lambda: len(list((tmp_path / RUNS).glob("*.parquet"))) >= 1, 300, "a first graph run")
    wait_for(lambda: job_pid(tmp_path, "graph_run.py"), 300, "a second graph run")
    process.send_signal(signal.SIGINT)
    process.wait(timeout=300)
    # 2. edit the setting and re-run: a consistent graph or a refusal, never a silent mix
    configs = settings(tmp_path, 0.02)
    result = snakemake(tmp_path, ADJACENCY, configs=configs)
    if result.returncode != 0:
        assert "graph runs were made with other settings" in result.output, result.describe()
        assert "graph.runs.lr: 0.01 there, 0.02 now" in result.output
        stale = [name for name, lr in lrs(tmp_path).items() if lr != 0.02]
        assert stale and all(f"{RUNS}/{name}" in result.output for name in stale)
        for name in stale:  # what the message says to do
            (tmp_path / RUNS / name).unlink()
        run_ok(tmp_path, ADJACENCY, configs=configs)
    assert set(lrs(tmp_path).values()) == {0.02} and len(lrs(tmp_path)) == 3

    # 3. the state an interrupt leaves, made for sure: one run unrecorded, then the setting edited
    forget(tmp_path, tmp_path / RUNS / sorted(lrs(tmp_path))[0])
    configs = settings(tmp_path, 0.03)
    result = snakemake(tmp_path, ADJACENCY, configs=configs)
    assert result.returncode != 0, result.describe()
    stale = sorted(lrs(tmp_path))[0]
    assert "1 of 3 graph runs were made with other settings" in result.output, result.describe()
    assert f"{RUNS}/{stale}: graph.runs.lr: 0.02 there, 0.03 now" in result.output
    assert not (tmp_path / ADJACENCY).exists()  # no graph of mixed runs
    (tmp_path / RUNS / stale).unlink()
    run_ok(tmp_path, ADJACENCY, configs=configs)
    assert set(lrs(tmp_path).values()) == {0.03}
