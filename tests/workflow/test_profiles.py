"""The execution profiles set how jobs run, never what the workflow computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted(REPO.glob("profiles/*/profile.yaml")) + sorted(REPO.glob("profiles/*/config.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.parent.name)
def test_no_profile_sets_config_files_or_values(path: Path) -> None:
    """A profile's `configfile` replaces the workflow's config.yaml (a plain `snakemake` would run the
    schema's defaults instead of the default task), and `config` values would differ between a
    laptop and a cluster: settings that change results belong in config files given explicitly."""
    profile = yaml.safe_load(path.read_text()) or {}
    assert not {"configfile", "configfiles", "config"} & set(profile), path


def test_there_are_profiles() -> None:
    assert {p.parent.name for p in PROFILES} >= {"default", "slurm", "local-gpu"}
