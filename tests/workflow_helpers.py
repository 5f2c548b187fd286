"""Helpers of the workflow tests: run Snakemake as a subprocess and read its dry-run report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
MAIN_CONFIG = REPO / "config.yaml"
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"
TINY_NI_CONFIG = REPO / "tests" / "configs" / "tiny_ni.yaml"
NI_EXAMPLE_CONFIG = REPO / "examples" / "ni" / "config.yaml"
DEFAULT_PROFILE = REPO / "profiles" / "default"

_RULE_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


@dataclass
class Result:
    """A finished Snakemake subprocess."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together (Snakemake logs to stderr)."""
        return self.stdout + "\n" + self.stderr

    def describe(self) -> str:
        """The command and its output, for assertion messages."""
        return (
            f"command: {' '.join(self.args)}\nreturn code: {self.returncode}\n"
            f"--- stdout ---\n{self.stdout[-8000:]}\n--- stderr ---\n{self.stderr[-8000:]}"
        )


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as YAML to ``path``; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def snakemake_command(
    workdir: Path,
    *args: str | os.PathLike,
    configs: Sequence[str | os.PathLike] = (MAIN_CONFIG, TINY_CONFIG),
    snakefile: Path = SNAKEFILE,
    cores: int | None = 2,
) -> list[str]:
    """The ``python -m snakemake`` command line for ``workdir`` (``cores`` None: not given).

    ``configs`` are passed to ``--configfile`` in order (later files override earlier ones).
    The workflow profile (profiles/default) is picked up from the Snakefile's folder.
    """
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir)]
    if cores is not None:
        command += ["--cores", str(cores)]
    command += ["--scheduler", "greedy"]
    # Targets and flags first: anything after --configfile's files would be read as a config file.
    command += [str(arg) for arg in args]
    if configs:
        command += ["--configfile", *map(str, configs)]
    return command


def snakemake(
    workdir: Path,
    *args: str | os.PathLike,
    configs: Sequence[str | os.PathLike] = (MAIN_CONFIG, TINY_CONFIG),
    cwd: Path | None = None,
    timeout: float = 900,
    snakefile: Path = SNAKEFILE,
    cores: int | None = 2,
    env: dict[str, str] | None = None,
) -> Result:
    """Run `snakemake_command` with ``workdir`` as working dir (``env``: default the process's)."""
    command = snakemake_command(workdir, *args, configs=configs, snakefile=snakefile, cores=cores)
    env = {**(os.environ if env is None else env), "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    done = subprocess.run(
        command,
        cwd=cwd or workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    return Result(command, done.returncode, done.stdout, done.stderr)


def run_ok(workdir: Path, *args: str | os.PathLike, **kwargs: Any) -> Result:
    """Run Snakemake and require exit status 0 (the output is shown otherwise)."""
    result = snakemake(workdir, *args, **kwargs)
    assert result.returncode == 0, result.describe()
    return result


def job_stats(output: str) -> dict[str, int]:
    """Jobs per rule from the first "Job stats:" table of Snakemake's output ({} if none).

    The ``total`` row is left out.
    """
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return {}
    counts: dict[str, int] = {}
    for line in lines[start + 3 :]:  # skip the "job count" header and its rule
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] == "total":
            assert int(parts[1]) == sum(counts.values()), f"inconsistent Job stats table:\n{output}"
            break
        counts[parts[0]] = int(parts[1])
    return counts


@dataclass
class PlannedJob:
    """One job of a dry run: its rule, wildcards and reason."""

    rule: str
    wildcards: str
    reason: str


def planned_jobs(output: str) -> list[PlannedJob]:
    """The jobs a dry run (``-n``) lists, with their ``wildcards:`` and ``reason:`` lines."""
    jobs: list[PlannedJob] = []
    current: PlannedJob | None = None
    for line in output.splitlines():
        header = _RULE_HEADER.match(line.strip())
        if header:
            current = PlannedJob(header.group(1), "", "")
            jobs.append(current)
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("reason:"):
            current.reason = stripped.removeprefix("reason:").strip()
        elif stripped.startswith("wildcards:"):
            current.wildcards = stripped.removeprefix("wildcards:").strip()
        elif not stripped:
            current = None
    return jobs


def reasons_of(output: str, rule: str) -> list[str]:
    """The ``reason:`` lines of the planned jobs of ``rule``."""
    return [job.reason for job in planned_jobs(output) if job.rule == rule]


def files_under(root: Path, patterns: Iterable[str] = ("*",)) -> list[Path]:
    """Files below ``root`` (recursively) matching any of ``patterns``, sorted."""
    found: set[Path] = set()
    for pattern in patterns:
        found.update(path for path in root.rglob(pattern) if path.is_file())
    return sorted(found)


def shared_data_dir() -> Path | None:
    """The shared data folder: $SKILLMIX_SHARED_DATA, else ../shared/data next to the repository."""
    value = os.environ.get("SKILLMIX_SHARED_DATA")
    path = Path(value) if value else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None
