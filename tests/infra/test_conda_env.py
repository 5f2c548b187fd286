"""The conda env of the rules installs the project from its own checkout with the project's
dependencies. (conda itself cannot be installed from the package registries this project builds
with, so creating the env is untested; see README.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import yaml
from workflow_helpers import REPO


def env_pip() -> list[str]:
    env = yaml.safe_load((REPO / "envs/skillmix.yaml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def test_the_env_lists_the_project_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["gguf"])
    listed = [line for line in env_pip() if not line.startswith("-e")]
    assert set(listed) == wanted and len(listed) == len(wanted)


def test_pip_installs_the_checkout_named_by_skillmix_source(tmp_path) -> None:
    editable = [line for line in env_pip() if line.startswith("-e")]
    assert editable == ["-e ${SKILLMIX_SOURCE}"]
    # conda hands the pip entries to pip as a requirements file; pip expands the variable
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(editable) + "\n")
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
    ]
    env = {**os.environ, "SKILLMIX_SOURCE": str(REPO)}
    done = subprocess.run(
        [*pip, "-r", str(requirements)], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Would install skillmix-0.1.0" in done.stdout, done.stdout


def test_the_workflow_names_its_checkout_for_the_env() -> None:
    common = (REPO / "rules/common.smk").read_text()
    assert 'os.environ.setdefault("SKILLMIX_SOURCE", str(SOURCE))' in common
    assert "SOURCE = Path(str(workflow.current_basedir)).parent" in common
