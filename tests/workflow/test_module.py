"""skillmix as a Snakemake `module` of another workflow, with `prefix:`: every path a job reads comes
from its inputs, so the stages that start from a trained model (LESS with `base_run`) find it under
the prefix, and nothing is written outside it."""

from __future__ import annotations

import pytest
import yaml
from workflow_helpers import MAIN_CONFIG, SNAKEFILE, TINY_CONFIG, files_under, run_ok, write_yaml

TINY_SELECT_CONFIG = SNAKEFILE.parent / "tests" / "configs" / "tiny_select.yaml"

OUTER = """\
configfile: "{main}"
configfile: "{tiny}"
configfile: "{select}"
configfile: "{override}"


module skillmix:
    snakefile:
        "{snakefile}"
    config:
        config
    prefix:
        "sm"


use rule * from skillmix as sm_*


rule all:
    default_target: True
    input:
        "sm/results/eval/random/metrics.parquet",
        "sm/results/select/selected/less.messages.jsonl",
"""


@pytest.mark.slow
def test_skillmix_as_a_module_with_a_prefix(tmp_path):
    work = tmp_path / "outer"
    work.mkdir()
    override = write_yaml(tmp_path / "override.yaml", {"train": {"strategies": ["random"]}})
    assert yaml.safe_load(TINY_SELECT_CONFIG.read_text())["select"]["base_run"] == "random"
    outer = work / "Snakefile"
    outer.write_text(
        OUTER.format(
            main=MAIN_CONFIG,
            tiny=TINY_CONFIG,
            select=TINY_SELECT_CONFIG,
            override=override,
            snakefile=SNAKEFILE,
        )
    )
    run_ok(work, configs=(), snakefile=outer, timeout=1500)
    top = sorted(p.name for p in work.iterdir() if not p.name.startswith("."))
    assert top == ["Snakefile", "sm"], top  # results, logs, benchmarks and resume states: under the prefix
    assert (work / "sm/results/select/selected/less.messages.jsonl").is_file()
    # the warm-up started from the random run's model under the prefix (its input), as a peft folder
    assert (work / "sm/results/select/warmup/epoch1/adapter_config.json").is_file()
    assert not files_under(
        work / "sm/results/resume"
    )  # resume states were kept under the prefix, then removed
    warmup_log = (work / "sm/logs/select/warmup.log").read_text()
    assert "Traceback" not in warmup_log
