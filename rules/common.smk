# Shared helpers: config validation, resources, stamps, input functions over the sliced skills;
# each stage's own helpers are in rules/helpers/<stage>.smk.
import os
from pathlib import Path

from skillmix.graph.units import UNIT_PATTERN, graph_units, unit_slugs
from skillmix.infra.provenance import method_code_version, script_code_version
from skillmix.data.sources import resolve_tiny_tokenizer
from skillmix.infra.inputs import check_data_paths, model_files, source_files
from skillmix.infra.inputs import task_files
from skillmix.infra.config import check_config_files, validate_config
from skillmix.infra.scale import check_planned_jobs
from skillmix.infra import registry

# the config files as Snakemake read them (the workflow's and --configfile's): plain YAML with no
# key given twice and no __use_yte__ (templating that runs the file's expressions)
check_config_files(workflow.configfiles)
validate_config(config)
check_data_paths(config)


config["model"]["tiny"] = resolve_tiny_tokenizer(config["model"], config["source"])

if not config["model"]["download"]:
    # jobs (which inherit this environment) never reach the model or data hub: a wrong name
    # fails at once instead of retrying the network
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[variable] = "1"


RUNS = config["train"]["strategies"]
"""The training runs of this config (train.strategies); registry.STRATEGIES holds every strategy."""
for _run in registry.with_need("strategy", "targets", RUNS):
    if not config["train"]["target_skills"]:
        raise ValueError(
            f"train.strategies includes {_run}, which needs train.target_skills (the skills to train on)"
        )


def local_files(files):
    """Config-named files as rule inputs, flat, exempt from a module's prefix (they are read where
    the config names them, relative to the working directory)."""
    return [local(f) for paths in files.values() for f in paths]


# the files of the source and of the configured model: editing one re-runs what reads it, and a
# missing one stops here, naming its key
SOURCE_FILES = local_files(source_files(config["source"]))
MODEL_FILES = local_files(model_files(config["model"]))


def results_path(sub):
    """Params function: `results/<sub>` (wildcards filled) beside the job's first output, so under a
    module's prefix too (for folders a job keeps that are not outputs, e.g. resume states).
    """

    def path(wildcards, output):
        first = str(output[0])
        prefix = first[: first.rindex("results/")] if "results/" in first else ""
        return f"{prefix}results/{sub.format(**wildcards)}"

    return path


SLICES = "results/slices"
MANIFEST = f"{SLICES}/manifest.json"


# the folder of this file, also when the workflow is used as a module of another
SOURCE = Path(str(workflow.current_basedir)).parent
SCRIPTS = SOURCE / "workflow" / "scripts"
# where the conda env (envs/skillmix.yaml) installs the skillmix package from
os.environ.setdefault("SKILLMIX_SOURCE", str(SOURCE))


def script_code(script):
    """The code version of a job script: a hash of the library modules it runs (its imports and
    all they import), so that editing one re-runs the rules that use it."""
    return script_code_version(SCRIPTS / script)


def res(rule_name, key):
    """A resource value of a rule, from config `resources` (0 for null: Snakemake's resources are numbers)."""
    value = config["resources"][rule_name][key]
    return 0 if value is None else value


def run_settings():
    """The `train` config minus the strategy list: what every training run shares.

    Adding or removing a strategy must not re-run the others.
    """
    return {k: v for k, v in config["train"].items() if k != "strategies"}


_CHECKED_MANIFESTS = {}


def manifest():
    """The slice manifest; waits for the slice checkpoint. Before its first use in a run of
    snakemake, every slice file is checked against its checksum and the config against the skills
    (skillmix.preflight), so a damaged slice or a wrong skill name stops the DAG here, before
    any job runs or any output is deleted."""
    path = checkpoints.slice.get().output.manifest
    key = (str(path), os.stat(path).st_mtime_ns)
    if key not in _CHECKED_MANIFESTS:
        # imported here: they need pandas, which parsing alone does not
        from skillmix.data.slicing import check_slice_set
        from skillmix.engine.model_config import check_model_config
        from skillmix.preflight import check_against_skills

        found = check_slice_set(path)
        check_saved_models(path)  # rules/helpers/train.smk
        # before any input function plans a job per skill or pair of skills
        check_planned_jobs(config, len(found["skills"]))
        check_against_skills(config, found)
        check_model_config(config["model"])
        _CHECKED_MANIFESTS[key] = found
    return _CHECKED_MANIFESTS[key]


def tokenizer_settings():
    """What the answers `model.max_length` cuts (counted by the slice job) depend on."""
    model = config["model"]
    keys = ("kind", "name_or_path", "gguf_file", "revision", "max_length")
    return {
        **{k: model[k] for k in keys},
        "tiny_tokenizer": {k: model["tiny"][k] for k in ("tokenizer", "vocabulary")},
    }


def split_slices(split):
    """Input function: the Parquet slices of every skill for one split."""

    def paths(wildcards):
        return [f"{SLICES}/{split}/{s['slug']}.parquet" for s in manifest()["skills"]]

    return paths


def stamp(script, **settings):
    """The provenance stamp of a rule's outputs (skillmix.infra.stamps): the settings its jobs are
    made with, by config key, and the code version of its script. A stage that combines several
    outputs compares their stamps with this, to refuse outputs left from an interrupted run.
    """
    return {**settings, "code": script_code(script)}


# each stage's helpers: input functions, params and provenance stamps
include: "helpers/train.smk"
include: "helpers/graph.smk"
include: "helpers/select.smk"
include: "helpers/kernel.smk"
include: "helpers/lm_eval.smk"
include: "helpers/mixers.smk"


def all_targets():
    """The default targets: metrics and plots of every training strategy."""
    targets = expand(
        [
            "results/eval/{run}/metrics.parquet",
            "results/eval/{run}/curves.png",
            "results/eval/{run}/mixture.png",
        ],
        run=RUNS,
    )
    targets += ["results/eval/summary.parquet", "results/eval/comparison.png"]
    if registry.with_need("strategy", "graph", RUNS):
        targets.append(graph_outputs(graph_dir())["heatmap"])
    if SELECT["enabled"]:
        targets += select_targets()
    if LM_EVAL["enabled"]:
        targets.append("results/lm_eval/summary.parquet")
    if KERNEL["enabled"]:
        targets += [
            f"{KER}/solutions.parquet",
            f"{KER}/comparison.parquet",
            f"{KER}/solutions.png",
            f"{KER}/comparison.html",
        ]
    return targets
