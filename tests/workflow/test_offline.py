"""Jobs run with the model hub offline unless the config lets them download."""

from __future__ import annotations

import os
from pathlib import Path

from workflow_helpers import MAIN_CONFIG, TINY_CONFIG, snakemake, write_yaml

HUB = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def test_a_hub_name_not_in_the_cache_fails_at_once_in_the_slice_job(tmp_path: Path) -> None:
    # an environment without any offline variable and an empty cache: the workflow sets them itself
    env = {k: v for k, v in os.environ.items() if k not in HUB} | {"HF_HOME": str(tmp_path / "hf")}
    override = write_yaml(
        tmp_path / "hub.yaml", {"model": {"kind": "pretrained", "name_or_path": "someorg/no-model"}}
    )
    result = snakemake(tmp_path, configs=(MAIN_CONFIG, TINY_CONFIG, override), env=env)
    assert result.returncode != 0, result.describe()
    log = (tmp_path / "logs" / "slice" / "slice.log").read_text()
    assert "model.name_or_path someorg/no-model: could not read the model's configuration" in log, log
    assert "the model hub is offline for skillmix jobs; model.download: true lets them download" in log
    assert not (tmp_path / "results").exists()
