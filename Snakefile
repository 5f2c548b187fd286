# skillmix: choose what a language model trains on. See README.md and config.yaml.
from snakemake.utils import min_version

from skillmix.infra.config import check_yaml_file

min_version("9.0")

# Snakemake reports a YAML syntax error without its place: name the line first
check_yaml_file("config.yaml")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"


scattergather:
    grads=config["select"]["grads"]["shards"],
    kernel=config["kernel"]["shards"],


wildcard_constraints:
    run=registry.pattern("strategy"),
    unit=UNIT_PATTERN,
    n="[0-9]+",


include: "rules/slice.smk"
include: "rules/graph.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/doremi.smk"
include: "rules/regmix.smk"
include: "rules/select.smk"
include: "rules/kernel.smk"
include: "rules/lm_eval.smk"


rule all:
    default_target: True
    input:
        all_targets(),
