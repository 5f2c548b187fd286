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
SELECTIONS = registry.names("selection")
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


def selection_inputs(wildcards):
    """Input function of one selection: what its method needs besides the pool (the influence
    scores of the gradient datastore, the target set)."""
    needs = registry.SELECTIONS[wildcards.selection].needs
    inputs = {}
    if "datastore" in needs:
        inputs["scores"] = f"{SEL}/influence/d{SELECT_DIM}/scores.parquet"
    if "targets" in needs:
        inputs["target"] = f"{SEL}/target/target.parquet"
    return inputs


def select_code_param(wildcards):
    """Params function: the code version of a selection (the select script and its method's module)."""
    return method_code_version(SCRIPTS / "select.py", "selection", wildcards.selection)
