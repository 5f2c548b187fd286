# Shared helpers: config validation, resources, input functions over the sliced skills.
import json

from snakemake.utils import validate

from skillmix.provenance import code_version

validate(config, schema="../workflow/schemas/config.schema.yaml")


STRATEGIES = config["train"]["strategies"]
SLICES = "results/slices"
MANIFEST = f"{SLICES}/manifest.json"


def res(rule_name, key):
    """A resource value of a rule, from config `resources`."""
    return config["resources"][rule_name][key]


def run_settings():
    """The `train` config minus the strategy list: what every training run shares.

    Adding or removing a strategy must not re-run the others.
    """
    return {k: v for k, v in config["train"].items() if k != "strategies"}


def manifest():
    """The slice manifest; waits for the slice checkpoint."""
    with checkpoints.slice.get().output.manifest.open() as f:
        return json.load(f)


def split_slices(split):
    """Input function: the Parquet slices of every skill for one split."""

    def paths(wildcards):
        return [f"{SLICES}/{split}/{s['slug']}.parquet" for s in manifest()["skills"]]

    return paths


def all_targets():
    """The default targets: metrics and plots of every training strategy."""
    return expand(
        ["results/eval/{run}/metrics.parquet", "results/eval/{run}/curves.png"],
        run=STRATEGIES,
    )
