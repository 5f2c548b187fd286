"""The library works from a wheel: no file it reads may live outside the package.

The test builds a wheel from a copy of the project (so nothing is written into the checkout),
installs it into a fresh virtualenv that sees this environment's dependencies but not its editable
`skillmix`, and, from a folder outside the checkout, validates a config and slices the default XOR
source. It fails if the config schema (package data, read with importlib.resources) is not in the
wheel. A few seconds: no network, no build isolation, no pip in the new virtualenv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from skillmix.data.slicing import make_slices

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_IN_WHEEL = "skillmix/infra/config.schema.yaml"
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE")  # what the build reads besides src/

# Runs in the new virtualenv, with its cwd outside the checkout; prints one JSON object.
PROBE = """
import json, sys
from importlib import resources

import skillmix
from skillmix.data.slicing import check_slice_set, make_slices, read_slices
from skillmix.infra.config import schema, validate_config
from skillmix.infra.errors import SkillmixInputError

config = {"train": {"steps": 7}}
validate_config(config)
try:
    validate_config({"train": {"strategies": ["random", "no_such_strategy"]}})
    rejected = None
except SkillmixInputError as exc:
    rejected = str(exc)
manifest = make_slices(config["source"], config["split"], "slices")
check_slice_set("slices/manifest.json")
frame = read_slices(["slices/train/xor-f.parquet"])["xor-f"]
print(json.dumps({
    "skillmix": skillmix.__file__,
    "schema_file": str(resources.files("skillmix.infra").joinpath("config.schema.yaml")),
    "path": sys.path,
    "config": config,
    "strategy_enum": schema()["properties"]["train"]["properties"]["strategies"]["items"]["enum"],
    "rejected": rejected,
    "manifest": manifest,
    "xor_f_rows": len(frame),
    "xor_f_skills": sorted(set(frame["skill"])),
}))
"""


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    shown = " ".join("<script>" if "\n" in arg else arg for arg in command)
    assert done.returncode == 0, f"{shown} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _quiet_env() -> dict[str, str]:
    """This environment without what would let the checkout or this venv leak into a child."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    return env | {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PYTHONNOUSERSITE": "1"}


PIP = [sys.executable, "-m", "pip"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the project (the build's build/ and egg-info never touch
    the checkout, and a stale build/lib cannot leak removed modules into it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(
        ROOT / "src" / "skillmix",
        source / "src" / "skillmix",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, source / name)
    dist = tmp / "dist"
    _run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
          "-w", str(dist), str(source)], cwd=tmp, env=_quiet_env())  # fmt: skip
    (built,) = dist.glob("skillmix-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path) -> dict:
    """The virtualenv the wheel is installed in, and what the probe printed there."""
    tmp = wheel.parents[1]
    env = _quiet_env()
    # a fresh virtualenv; the wheel goes in before it can see this environment's packages
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env)
    python = venv / "bin" / "python"
    _run([*PIP, "--python", str(python), "install", "--no-deps", "--no-index", "--no-cache-dir",
          str(wheel)], cwd=tmp, env=env)  # fmt: skip
    # then the dependencies: this environment's site-packages, listed in a .pth file. The .pth
    # files inside a path added this way are not processed, so the editable install's path to
    # the checkout's src/ is not picked up.
    site = Path(_run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp, env=env).strip())  # fmt: skip
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "outer_site_packages.pth").write_text("".join(f"{path}\n" for path in ours))

    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    out = _run([str(python), "-I", "-c", PROBE], cwd=elsewhere, env=env)
    return {"site": site, "elsewhere": elsewhere, "probe": json.loads(out.strip().splitlines()[-1])}


def test_the_wheel_carries_the_schema_and_every_data_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = {n for n in archive.namelist() if n.startswith("skillmix/")}
    assert SCHEMA_IN_WHEEL in names, f"{SCHEMA_IN_WHEEL} is not in the wheel (pyproject package-data)"
    # every module and every data file of the package (a new data file needs package-data), as
    # copied for the build (the checkout may change while the tests run)
    package = wheel.parents[1] / "source" / "src"
    files = {
        path.relative_to(package).as_posix()
        for path in (package / "skillmix").rglob("*")
        if path.is_file() and path.suffix != ".pyc" and "__pycache__" not in path.parts
    }
    assert files <= names, f"files of the package missing from the wheel: {sorted(files - names)}"


def test_skillmix_is_imported_from_the_new_virtualenv(installed: dict) -> None:
    probe = installed["probe"]
    assert Path(probe["skillmix"]).is_relative_to(installed["site"])
    assert Path(probe["schema_file"]).is_relative_to(installed["site"])
    assert not Path(probe["skillmix"]).is_relative_to(ROOT)
    assert str(ROOT / "src") not in probe["path"]
    assert not installed["elsewhere"].is_relative_to(ROOT)


def test_a_config_is_validated_and_completed_from_the_wheel(installed: dict) -> None:
    probe = installed["probe"]
    config = probe["config"]
    assert config["train"]["steps"] == 7  # given, kept
    assert config["train"]["strategies"] == ["random", "stratified", "skillit"]  # schema defaults
    assert config["source"]["kind"] == "xor"
    assert config["split"] == {"seed": 0, "val": 100, "test": 100, "max_train": None}
    # the enum is filled from the registry, read from the installed package
    assert {"random", "stratified", "skillit"} <= set(probe["strategy_enum"])
    rejected = probe["rejected"]
    assert rejected is not None, "an unknown strategy was accepted"
    assert rejected.startswith("config train.strategies.1:")
    assert "'no_such_strategy' is not one of" in rejected and "'skillit'" in rejected


def test_the_default_xor_source_is_sliced_from_the_wheel(installed: dict, tmp_path: Path) -> None:
    probe = installed["probe"]
    manifest = probe["manifest"]
    assert [s["name"] for s in manifest["skills"]] == ["map-f", "map-g", "map-h", "xor-f", "xor-g"]
    assert all(s["counts"] == {"train": 800, "val": 100, "test": 100} for s in manifest["skills"])
    assert manifest["source"] == {"kind": "xor", "origin": "xor generator"}
    assert probe["xor_f_rows"] == 800 and probe["xor_f_skills"] == ["xor-f"]
    assert (installed["elsewhere"] / "slices" / "manifest.json").is_file()
    # the same slices, byte for byte (the manifest records every file's sha256), as the checkout's
    here = make_slices({"kind": "xor"}, None, tmp_path / "slices")
    assert here == manifest
