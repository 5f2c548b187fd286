# Helpers of the training runs and their evaluation (rules/train.smk, rules/evaluate.smk).


def settings_of(run):
    """The settings of one strategy only (its registry entry's block), so that editing them re-runs
    only that strategy."""
    block = registry.STRATEGIES[run].settings
    return config[block] if block else {}


def train_code(run):
    """The code version of a training run: the train script's library code and its strategy's
    module, so that editing one strategy's module re-runs that strategy only."""
    return method_code_version(SCRIPTS / "train.py", "strategy", run)


def train_code_param(wildcards):
    """Params function: the code version of the run."""
    return train_code(wildcards.run)


def strategy_settings(wildcards):
    """Params function: the settings of the run's strategy."""
    return settings_of(wildcards.run)


EVALUATE_STAMP = stamp("evaluate.py", model=config["model"], eval=config["eval"])


def train_stamp(run):
    """The stamp of a training run's outputs (its strategy's settings and code included)."""
    return {
        **stamp(
            "train.py",
            source=config["source"],
            model=config["model"],
            train=run_settings(),
            strategy=settings_of(run),
            eval=config["eval"],
        ),
        "code": train_code(run),
    }


def train_stamp_param(wildcards):
    """Params function: the stamp of the run's outputs."""
    return train_stamp(wildcards.run)


def metrics_stamps():
    """What `compare` expects of each run's metrics: the training and evaluation settings now."""
    return {
        run: {"train": train_stamp(run), "evaluate": EVALUATE_STAMP} for run in RUNS
    }


def train_inputs(wildcards):
    """Input function of a training run: the slices, plus the skills graph or the mixture file of the
    strategies that need one."""
    inputs = {
        "train": split_slices("train")(wildcards),
        "val": split_slices("val")(wildcards),
        "manifest": MANIFEST,
        "model_files": MODEL_FILES,
    }
    if "graph" in registry.STRATEGIES[wildcards.run].needs:
        inputs.update(checked_graph_files())
    inputs.update(mixture_input(wildcards.run))
    return inputs


def checked_graph_files():
    """The skills graph's matrix and skill order as inputs of a run that needs them; a graph already
    on disk is checked first (skillmix.graph.store), so an edited or damaged one stops the DAG
    naming it, before Snakemake deletes the outputs of the runs that would read it."""
    files = graph_outputs(graph_dir())
    # under a module's prefix too
    prefix = str(checkpoints.slice.get().output.manifest)[: -len(MANIFEST)]
    folder = prefix + graph_dir()
    names = [Path(files[k]).name for k in ("adjacency", "skills")]
    if all(os.path.isfile(f"{folder}/{name}") for name in names):
        from skillmix.graph.store import read_graph

        read_graph(folder)
    return {"graph": files["adjacency"], "graph_skills": files["skills"]}


def check_saved_models(manifest_path):
    """DAG time: every safetensors file of the results (saved models, adapters, warm-up checkpoints)
    and of the configured local model is whole (skillmix.infra.artefacts), so a truncated one is
    named with its folder instead of "Nothing to be done" or a job failing after Snakemake deleted
    what it would replace."""
    from skillmix.infra.artefacts import check_learned_artefacts

    results = Path(manifest_path).parents[1]
    check_learned_artefacts(results, [str(f) for f in MODEL_FILES])
