# Shared helpers: config validation, resources, input functions over the sliced skills.
import os
from pathlib import Path

from snakemake.utils import validate

from skillmix.graph.units import UNIT_PATTERN, graph_units, unit_slugs
from skillmix.infra.provenance import script_code_version
from skillmix.data.sources import resolve_tiny_tokenizer
from skillmix.infra.inputs import model_files, source_files, task_files

validate(config, schema="../workflow/schemas/config.schema.yaml")


config["model"]["tiny"] = resolve_tiny_tokenizer(config["model"], config["source"])

if not config["model"]["download"]:
    # jobs (which inherit this environment) never reach the model or data hub: a wrong name
    # fails at once instead of retrying the network
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[variable] = "1"


STRATEGIES = config["train"]["strategies"]
if "target_only" in STRATEGIES and not config["train"]["target_skills"]:
    raise ValueError(
        "train.strategies includes target_only, which needs train.target_skills (the skills to train on)"
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
    (skillmix.infra.preflight), so a damaged slice or a wrong skill name stops the DAG here, before
    any job runs or any output is deleted."""
    path = checkpoints.slice.get().output.manifest
    key = (str(path), os.stat(path).st_mtime_ns)
    if key not in _CHECKED_MANIFESTS:
        # imported here: they need pandas, which parsing alone does not
        from skillmix.data.slicing import check_slice_set
        from skillmix.engine.model_config import check_model_config
        from skillmix.infra.preflight import check_against_skills

        found = check_slice_set(path)
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


CURRICULA = ("curriculum", "anticurriculum", "skill_curriculum")


def settings_of(run):
    """The settings of one strategy only, so that editing them re-runs only that strategy."""
    if run == "skillit":
        return config["skillit"]
    if run in CURRICULA:
        return config["curriculum"]
    return {}


def strategy_settings(wildcards):
    """Params function: the settings of the run's strategy."""
    return settings_of(wildcards.run)


def stamp(script, **settings):
    """The provenance stamp of a rule's outputs (skillmix.infra.stamps): the settings its jobs are
    made with, by config key, and the code version of its script. A stage that combines several
    outputs compares their stamps with this, to refuse outputs left from an interrupted run.
    """
    return {**settings, "code": script_code(script)}


GRAPH_RUN_STAMP = stamp(
    "graph_run.py",
    source=config["source"],
    model=config["model"],
    **{"graph.runs": config["graph"]["runs"]},
    eval=config["eval"],
)
EVALUATE_STAMP = stamp("evaluate.py", model=config["model"], eval=config["eval"])


def train_stamp(run):
    """The stamp of a training run's outputs (its strategy's settings included)."""
    return stamp(
        "train.py",
        source=config["source"],
        model=config["model"],
        train=run_settings(),
        strategy=settings_of(run),
        eval=config["eval"],
    )


def train_stamp_param(wildcards):
    """Params function: the stamp of the run's outputs."""
    return train_stamp(wildcards.run)


def metrics_stamps():
    """What `compare` expects of each run's metrics: the training and evaluation settings now."""
    return {
        run: {"train": train_stamp(run), "evaluate": EVALUATE_STAMP}
        for run in STRATEGIES
    }


def graph_dir():
    """Where the skills graph of the configured method is assembled."""
    return f"results/graph/{config['graph']['method']}"


def graph_report_outputs(folder):
    """The files of an assembled skills graph as rule outputs, the heatmap in the report."""
    outputs = graph_outputs(folder)
    outputs["heatmap"] = report(
        outputs["heatmap"],
        caption="../workflow/report/heatmap.rst",
        category="Skills graph",
        labels={"method": "{method}"},
    )
    return outputs


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
        "model_files": MODEL_FILES,
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
    files = {"given_adjacency": local(given["adjacency"])}
    if given.get("skills"):
        files["given_skills"] = local(given["skills"])
    return files


# The gradient skills graph (graph.method: gradient) reads existing checkpoints only.
GRADIENT_CHECKPOINTS = config["graph"]["gradient"]["checkpoints"]
if config["graph"]["method"] == "gradient" and "skillit" in GRADIENT_CHECKPOINTS:
    raise ValueError(
        "graph.gradient.checkpoints names skillit, whose training needs the graph itself; "
        "use initial or another strategy's model"
    )


def gradient_graph_models(wildcards):
    """Input function of the gradient graph: the trained models among its checkpoints."""
    return [
        f"results/train/{name}/model"
        for name in GRADIENT_CHECKPOINTS
        if name != "initial"
    ]


# LESS data selection (rules/select.smk).
SELECT = config["select"]
SEL = "results/select"
CHECKPOINTS = [f"epoch{e}" for e in range(1, SELECT["warmup"]["epochs"] + 1)]
DIMS = sorted(set(SELECT["grads"]["dims"]))
SELECT_DIM = SELECT["selection"]["dim"] or DIMS[-1]
if SELECT_DIM not in DIMS:
    raise ValueError(
        f"select.selection.dim is {SELECT_DIM}, which is not one of select.grads.dims {DIMS}"
    )
SELECTIONS = ["less", "random"]
# what training on a selection and its evaluation are made with, the same for both selections
SELECTED_TRAIN_STAMP = stamp(
    "train_selected.py",
    model=config["model"],
    base_run=SELECT["base_run"],
    **{f"select.{k}": SELECT[k] for k in ("lora", "warmup", "train")},
    eval=config["eval"],
)
SELECTED_EVALUATE_STAMP = stamp(
    "evaluate_selected.py", model=config["model"], eval=config["eval"]
)


def base_input(run):
    """The trained model a stage starts from (a `base_run`), as an input; none by default.

    Jobs load it from this input (`skillmix.infra.inputs.based_on`), so under a module's prefix too.
    """
    return [f"results/train/{run}/model"] if run else []


def model_inputs(run):
    """The configured model's files, as inputs of a stage that loads it (none with a `base_run`)."""
    return [] if run else MODEL_FILES


def target_inputs(wildcards):
    """Input function of the target set: external files, or the slices of the target skills."""
    # imported here: only LESS with target files needs it (and pandas) at parse time
    from skillmix.less.targets import expand_target_files

    files = [e["path"] for e in expand_target_files(SELECT["target"]["files"])]
    if files:
        return {"files": [local(f) for f in files]}
    if not SELECT["target"]["skills"]:
        raise ValueError(
            "select is enabled but neither select.target.skills nor select.target.files is set"
        )
    return {
        "val": split_slices("val")(wildcards),
        "test": split_slices("test")(wildcards),
        "manifest": MANIFEST,
    }


def grads_examples(wildcards):
    """Input function of a gradient shard: the candidate pool or the target set."""
    if wildcards.set == "candidates":
        return f"{SEL}/pool.parquet"
    return f"{SEL}/target/target.parquet"


def set_feature(set_name):
    """The feature of a set: LESS's Adam feature (by default) for candidates, the gradient for targets."""
    grads = SELECT["grads"]
    return grads["feature"] if set_name == "candidates" else grads["target_feature"]


def grads_feature(wildcards):
    """Params function: the feature of the shard's set."""
    return set_feature(wildcards.set)


def grads_stamp(set_name):
    """The stamp of a gradient shard of the candidates or the target set."""
    return stamp(
        "grads.py",
        model=config["model"],
        **{"select.lora": SELECT["lora"], "select.grads": SELECT["grads"]},
        base_run=SELECT["base_run"],
        feature=set_feature(set_name),
        dims=DIMS,
    )


def grads_stamp_param(wildcards):
    """Params function: the stamp of the shard's set."""
    return grads_stamp(wildcards.set)


def influence_inputs(wildcards):
    """Input function of influence: per checkpoint, the feature shards and indexes of both sets."""
    files = {}
    for c in CHECKPOINTS:
        for s in ("candidates", "target"):
            base = f"{SEL}/grads/{c}/{s}"
            files[f"{s}_{c}"] = gather.grads(
                f"{base}/d{wildcards.dim}/{{scatteritem}}.npy"
            )
            files[f"{s}_index_{c}"] = gather.grads(
                f"{base}/index/{{scatteritem}}.parquet"
            )
    return files


def select_targets():
    """The results of LESS selection: scores, selections, their training and the comparison."""
    targets = expand(f"{SEL}/influence/d{{dim}}/scores.parquet", dim=DIMS)
    targets += [
        f"{SEL}/selected/less.jsonl",
        f"{SEL}/selected/composition.png",
        f"{SEL}/selected/scores.png",
        f"{SEL}/eval/summary.parquet",
        f"{SEL}/eval/comparison.png",
    ]
    targets += expand(f"{SEL}/eval/{{selection}}/curves.png", selection=SELECTIONS)
    return targets


# The eNTK stage (rules/kernel.smk).
KERNEL = config["kernel"]
KER = "results/kernel"
# what the task table depends on (not the formulas or solvers)
KERNEL_TASK = {
    k: KERNEL[k]
    for k in ("skills", "label_split", "label_words", "k_shot", "seed", "max_eval")
}


# what every kernel feature shard is made with
KERNEL_FEATURES_STAMP = stamp(
    "kernel_features.py",
    model=config["model"],
    base_run=KERNEL["base_run"],
    **{
        f"kernel.{k}": KERNEL[k] for k in ("formulas", "subset", "binary", "projection")
    },
)


# Optional standard evaluation (rules/lm_eval.smk).
LM_EVAL = config["lm_eval"]
SELECTION_MODELS = {f"select_{s}": f"{SEL}/train/{s}/model" for s in SELECTIONS}


def lm_eval_model(wildcards):
    """Input function of lm-eval: the saved model folder a name in lm_eval.models stands for."""
    name = wildcards.model
    if name in SELECTION_MODELS:
        return SELECTION_MODELS[name]
    return f"results/train/{name}/model"


if LM_EVAL["enabled"]:
    # imported here: lm-eval is optional
    from skillmix.engine.harness import require_lm_eval

    require_lm_eval()
    if not LM_EVAL["models"] or not LM_EVAL["tasks"]:
        raise ValueError(
            "lm_eval is enabled but lm_eval.models or lm_eval.tasks is empty"
        )
    for name in LM_EVAL["models"]:
        if name in SELECTION_MODELS and not SELECT["enabled"]:
            raise ValueError(
                f"lm_eval.models names {name}, but select.enabled is false"
            )
        if name not in SELECTION_MODELS and name not in STRATEGIES:
            raise ValueError(
                f"lm_eval.models names {name!r}, which is neither one of train.strategies "
                f"{STRATEGIES} nor one of {sorted(SELECTION_MODELS)}"
            )
LM_EVAL_TASK_FILES = local_files(
    {"lm_eval.include_path": task_files(LM_EVAL["include_path"])}
    if LM_EVAL["enabled"] and LM_EVAL["include_path"]
    else {}
)


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
