"""How a model trained on a selection does on the target: loss and accuracy per target skill."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from skillmix.engine.evaluation import evaluate_skills
from skillmix.engine.modeling import load_saved, select_runtime
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.selection.targets import encode_skills


def evaluate_target(
    model_dir: str | os.PathLike,
    model_cfg: dict[str, Any],
    evaluation: pd.DataFrame,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Loss and exact-match accuracy of a saved model on each evaluation skill.

    Columns skill, loss, accuracy, n.
    """
    model_cfg = complete("model", model_cfg)
    if evaluation.empty:
        raise SkillmixInputError("the target has no evaluation examples")
    model, tokenizer = load_saved(model_dir)
    runtime = select_runtime(model_cfg["device"], model_cfg["precision"])
    model.to(runtime.device)
    sets = encode_skills(tokenizer, evaluation, model_cfg["max_length"])
    metrics = evaluate_skills(model, tokenizer, sets, runtime, batch_size)
    return metrics
