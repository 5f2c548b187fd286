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
        inputs["graph"] = graph_outputs(graph_dir())["adjacency"]
        inputs["graph_skills"] = graph_outputs(graph_dir())["skills"]
    inputs.update(mixture_input(wildcards.run))
    return inputs
