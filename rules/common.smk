# Shared helpers: config validation, resources, input functions over the sliced skills.
import json

from snakemake.utils import validate

from skillmix.graph import UNIT_PATTERN, graph_units, unit_slugs
from skillmix.provenance import code_version

validate(config, schema="../workflow/schemas/config.schema.yaml")


STRATEGIES = config["train"]["strategies"]
if "target_only" in STRATEGIES and not config["train"]["target_skills"]:
    raise ValueError(
        "train.strategies includes target_only, which needs train.target_skills (the skills to train on)"
    )
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


CURRICULA = ("curriculum", "anticurriculum", "skill_curriculum")


def strategy_settings(wildcards):
    """The settings of one strategy only, so that editing them re-runs only that strategy."""
    if wildcards.run == "skillit":
        return config["skillit"]
    if wildcards.run in CURRICULA:
        return config["curriculum"]
    return {}


def graph_dir():
    """Where the skills graph of the configured method is assembled."""
    return f"results/graph/{config['graph']['method']}"


def graph_outputs(folder):
    """The files of an assembled skills graph."""
    return {
        "adjacency": f"{folder}/adjacency.npy",
        "skills": f"{folder}/skills.json",
        "raw": f"{folder}/raw.parquet",
        "heatmap": f"{folder}/heatmap.png",
        "info": f"{folder}/graph.json",
    }


def train_inputs(wildcards):
    """Input function of a training run: the slices, plus the skills graph for Skill-It."""
    inputs = {
        "train": split_slices("train")(wildcards),
        "val": split_slices("val")(wildcards),
        "manifest": MANIFEST,
    }
    if wildcards.run == "skillit":
        inputs["graph"] = graph_outputs(graph_dir())["adjacency"]
        inputs["graph_skills"] = graph_outputs(graph_dir())["skills"]
    return inputs


def unit_train_slices(wildcards):
    """Input function of a graph run: the training slices of the unit's one or two skills."""
    manifest()  # waits for the slice checkpoint
    return [f"{SLICES}/train/{slug}.parquet" for slug in unit_slugs(wildcards.unit)]


def graph_curves(wildcards):
    """Input function of graph assembly: the curve of every run the method needs."""
    slugs = [s["slug"] for s in manifest()["skills"]]
    return [
        f"results/graph/{wildcards.method}/runs/{unit}.parquet"
        for unit in graph_units(wildcards.method, slugs)
    ]


def given_graph_files(wildcards):
    """Input function of a given graph: its matrix and, if named, its skills file."""
    given = config["graph"]["given"]
    if not given.get("adjacency"):
        raise ValueError(
            "graph.method is given but graph.given.adjacency names no file"
        )
    files = {"given_adjacency": given["adjacency"]}
    if given.get("skills"):
        files["given_skills"] = given["skills"]
    return files


def all_targets():
    """The default targets: metrics and plots of every training strategy."""
    targets = expand(
        [
            "results/eval/{run}/metrics.parquet",
            "results/eval/{run}/curves.png",
            "results/eval/{run}/mixture.png",
        ],
        run=STRATEGIES,
    )
    targets += ["results/eval/summary.parquet", "results/eval/comparison.png"]
    if "skillit" in STRATEGIES:
        targets.append(graph_outputs(graph_dir())["heatmap"])
    return targets
