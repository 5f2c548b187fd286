"""How a model trained on a selection does on the target (loss and accuracy per target skill), and
what each selection method's own stages cost (:func:`selection_costs`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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


COST_COLUMNS = ["selection", "stage", "jobs", "wall_seconds", "cpu_seconds", "max_rss_mb"]
"""The selection cost table: per method and stage, its jobs' summed wall and CPU time and their
largest resident memory (from Snakemake's benchmark files), and a `total` row per method."""


def selection_costs(
    selections: Sequence[str], benchmarks: Mapping[str, Mapping[str, Sequence[str | os.PathLike]]]
) -> pd.DataFrame:
    """The cost of each selection method's own stages before its select job (LESS: warm-up,
    gradient datastore, influence; RDS+: hidden states, scores; random: none), side by side.

    `benchmarks` maps a method to {stage: the benchmark TSVs of that stage's jobs}.
    """
    rows = []
    for name in selections:
        stages = benchmarks.get(name, {})
        for stage, files in stages.items():
            tables = [pd.read_csv(f, sep="\t") for f in files]
            rows.append(
                {
                    "selection": name,
                    "stage": stage,
                    "jobs": len(tables),
                    "wall_seconds": float(sum(t["s"].mean() for t in tables)),
                    "cpu_seconds": float(sum(t["cpu_time"].mean() for t in tables)),
                    "max_rss_mb": float(max((t["max_rss"].max() for t in tables), default=0.0)),
                }
            )
        mine = [r for r in rows if r["selection"] == name]
        rows.append(
            {
                "selection": name,
                "stage": "total",
                "jobs": sum(r["jobs"] for r in mine),
                "wall_seconds": sum(r["wall_seconds"] for r in mine),
                "cpu_seconds": sum(r["cpu_seconds"] for r in mine),
                "max_rss_mb": max((r["max_rss_mb"] for r in mine), default=0.0),
            }
        )
    return pd.DataFrame(rows, columns=COST_COLUMNS)
