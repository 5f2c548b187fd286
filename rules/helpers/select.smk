# Helpers of LESS data selection (rules/select.smk).
SELECT = config["select"]
SEL = "results/select"
CHECKPOINTS = [f"epoch{e}" for e in range(1, SELECT["warmup"]["epochs"] + 1)]
DIMS = sorted(set(SELECT["grads"]["dims"]))
SELECT_DIM = SELECT["selection"]["dim"] or DIMS[-1]
if SELECT_DIM not in DIMS:
    raise ValueError(
        f"select.selection.dim is {SELECT_DIM}, which is not one of select.grads.dims {DIMS}"
    )
SELECTIONS = list(SELECT["methods"])
# the methods that score the candidates before selecting, and the scores table each writes
SCORES_BY_NEED = {
    "datastore": f"{SEL}/influence/d{SELECT_DIM}/scores.parquet",
    "hidden_states": f"{SEL}/rds/scores.parquet",
}
SCORED = [s for s in SELECTIONS if registry.SELECTIONS[s].needs & set(SCORES_BY_NEED)]
if SELECT["enabled"] and not SCORED:
    raise ValueError(
        f"select.methods is {SELECTIONS}: choose at least one method that scores the "
        "candidates (less or rds)"
    )
HIDDEN_SETS = ["candidates", "target"]
# what RDS+'s hidden states are made with (both sets alike)
HIDDEN_STAMP = stamp(
    "hidden_states.py",
    model=config["model"],
    base_run=SELECT["base_run"],
    **{"select.rds": SELECT["rds"]},
)
# the stages each need runs before selection, whose jobs' benchmarks make a method's cost
STAGES_BY_NEED = {
    "warmup": ["warmup"],
    "datastore": ["grads", "influence"],
    "hidden_states": ["hidden_states", "rds_scores"],
}
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
    from skillmix.selection.targets import expand_target_files

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


def scores_of(selection):
    """The scores table a scored selection method reads (None for one that scores nothing)."""
    needs = registry.SELECTIONS[selection].needs
    for need, path in SCORES_BY_NEED.items():
        if need in needs:
            return path
    return None


def composition_scores():
    """The scores whose distribution the composition figure shows: LESS's when it runs."""
    return scores_of("less" if "less" in SCORED else SCORED[0]) if SCORED else []


def select_targets():
    """The results of selection: scores, selections, their training, the comparison and costs."""
    targets = []
    if "less" in SELECTIONS:
        targets += expand(f"{SEL}/influence/d{{dim}}/scores.parquet", dim=DIMS)
    targets += [scores_of(s) for s in SCORED if scores_of(s) not in targets]
    targets += expand(f"{SEL}/selected/{{selection}}.jsonl", selection=SCORED)
    targets += [
        f"{SEL}/selected/composition.png",
        f"{SEL}/selected/scores.png",
        f"{SEL}/eval/summary.parquet",
        f"{SEL}/eval/comparison.png",
        f"{SEL}/eval/costs.parquet",
    ]
    targets += expand(f"{SEL}/eval/{{selection}}/curves.png", selection=SELECTIONS)
    return targets


def selection_inputs(wildcards):
    """Input function of one selection: what its method needs besides the pool (its scores:
    LESS's influence or RDS+'s similarities; the target set)."""
    needs = registry.SELECTIONS[wildcards.selection].needs
    inputs = {}
    scores = scores_of(wildcards.selection)
    if scores:
        inputs["scores"] = scores
    if "targets" in needs:
        inputs["target"] = f"{SEL}/target/target.parquet"
    return inputs


def hidden_examples(wildcards):
    """Input function of a hidden-states job: the candidate pool or the target set."""
    return grads_examples(wildcards)


def rds_target_skills():
    """The target skills the config names (each must have examples); none with target files."""
    return [] if SELECT["target"]["files"] else list(SELECT["target"]["skills"])


def stage_benchmarks(stage):
    """The benchmark files of a selection stage's jobs (what its cost is read from)."""
    if stage == "warmup":
        return ["benchmarks/select/warmup.tsv"]
    if stage == "grads":
        return [
            f
            for c in CHECKPOINTS
            for s in ("candidates", "target")
            for f in gather.grads(
                f"benchmarks/select/grads/{c}/{s}/{{scatteritem}}.tsv"
            )
        ]
    if stage == "influence":
        return [f"benchmarks/select/influence/d{SELECT_DIM}.tsv"]
    if stage == "hidden_states":
        return expand("benchmarks/select/hidden/{set}.tsv", set=HIDDEN_SETS)
    return [f"benchmarks/select/{stage}.tsv"]


def cost_stages():
    """{input name: [selection, stage]} of every chosen method's own stages."""
    return {
        f"{s}__{stage}": [s, stage]
        for s in SELECTIONS
        for need in STAGES_BY_NEED
        if need in registry.SELECTIONS[s].needs
        for stage in STAGES_BY_NEED[need]
    }


def cost_inputs(wildcards):
    """Input function of the cost table: the benchmark files of every chosen method's stages."""
    return {key: stage_benchmarks(stage) for key, (_, stage) in cost_stages().items()}


def select_code_param(wildcards):
    """Params function: the code version of a selection (the select script and its method's module)."""
    return method_code_version(SCRIPTS / "select.py", "selection", wildcards.selection)
