# Helpers of the optional standard evaluation (rules/lm_eval.smk).
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
    from skillmix.harness import require_lm_eval

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
        if name not in SELECTION_MODELS and name not in RUNS:
            raise ValueError(
                f"lm_eval.models names {name!r}, which is neither one of train.strategies "
                f"{RUNS} nor one of {sorted(SELECTION_MODELS)}"
            )
LM_EVAL_TASK_FILES = local_files(
    {"lm_eval.include_path": task_files(LM_EVAL["include_path"])}
    if LM_EVAL["enabled"] and LM_EVAL["include_path"]
    else {}
)
