"""Results of the Skill-It stage: a trained model's test metrics joined to its validation curve, and
the comparison of all strategies (tables and figures)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skillmix.data.slicing import read_manifest
from skillmix.engine.evaluation import METRIC_COLUMNS, evaluate_skills
from skillmix.engine.modeling import load_saved, select_runtime
from skillmix.engine.training_run import load_sets
from skillmix.graph.units import graph_units
from skillmix.infra import registry
from skillmix.infra.config import complete
from skillmix.infra.jobs import write_parquet
from skillmix.infra.stamps import read_stamp
from skillmix.plotting import plot_comparison, plot_mixture, plot_skill_curves, plot_weights

METRICS_COLUMNS = ["run", "split", "step", *METRIC_COLUMNS]


def evaluate_run(
    run: str,
    model_dir: str | os.PathLike,
    model_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    manifest_path: str | os.PathLike,
    test_paths: Sequence[str | os.PathLike],
    val_curve_path: str | os.PathLike,
    steps_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    plot_path: str | os.PathLike,
    mixture_path: str | os.PathLike | None = None,
    mixture_plot_path: str | os.PathLike | None = None,
    stamp: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Test-split metrics of a trained model joined to its validation curve; table and plot.

    The table carries the training run's stamp (read from its steps table) and this evaluation's
    `stamp` (`skillmix.infra.stamps`), so that comparing runs can refuse a stale one.

    The metrics table has one row per (split, step, skill): the validation rows come from
    training, the test rows are measured here at the final step.
    """
    eval_cfg = complete("eval", eval_cfg)
    model_cfg = complete("model", model_cfg)
    manifest = read_manifest(manifest_path)
    skills = [s["name"] for s in manifest["skills"]]
    model, tokenizer = load_saved(model_dir)
    runtime = select_runtime(model_cfg["device"], model_cfg["precision"])
    model.to(runtime.device)
    test_sets = load_sets(
        tokenizer,
        skills,
        test_paths,
        model_cfg["max_length"],
        eval_cfg.get("max_examples_per_skill"),
        eos_label=eval_cfg["eos_in_loss"],
    )
    test = evaluate_skills(
        model,
        tokenizer,
        test_sets,
        runtime,
        eval_cfg["batch_size"],
        score=eval_cfg["score"],
    )
    final_step = int(pd.read_parquet(steps_path)["step"].max())
    test.insert(0, "step", final_step)
    test.insert(0, "split", "test")
    val = pd.read_parquet(val_curve_path)
    val.insert(0, "split", "val")
    metrics = pd.concat([val, test], ignore_index=True)
    metrics.insert(0, "run", run)
    metrics = metrics[METRICS_COLUMNS]
    write_parquet(metrics, metrics_path, stamp={"train": read_stamp(steps_path), "evaluate": stamp})
    plot_skill_curves(
        val,
        plot_path,
        f"{run}: validation curves (test accuracy {test['accuracy'].mean():.3f}, "
        f"test loss {test['loss'].mean():.3f} at step {final_step})",
    )
    if mixture_path is not None and mixture_plot_path is not None:
        title = f"{run}: training mixture over rounds"
        if run in registry.STRATEGIES:
            title += f"\n({registry.STRATEGIES[run].summary})"
        plot_mixture(pd.read_parquet(mixture_path), mixture_plot_path, title)
    return metrics


COST_COLUMNS = [
    "run",
    "steps",
    "evaluations",
    "extra_runs",
    "extra_steps",
    "extra_examples",
    "extra_evaluations",
    "wall_seconds",
    "stage_wall_seconds",
]
"""The comparison's cost table: each run's budget, and what its method spent beside it."""


def run_costs(
    runs: Sequence[str],
    job_metrics: Sequence[str | os.PathLike],
    stage_metrics: dict[str, Sequence[str | os.PathLike]] | None = None,
    graph_cost: dict[str, dict[str, int]] | None = None,
) -> pd.DataFrame:
    """One row per run: its optimiser steps and validation passes, the training its method spent
    outside the evaluated run (reference and proxy runs: the sampler's `cost`; the skills graph's
    runs: `graph_cost` by run), the run's wall time and that of its method's own stage jobs
    (`stage_metrics`: their job_metrics files)."""
    rows = []
    for run, path in zip(runs, job_metrics, strict=True):
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
        for key, value in (graph_cost or {}).get(run, {}).items():
            metrics[key] = metrics.get(key, 0) + value
        stage = [json.loads(Path(p).read_text(encoding="utf-8")) for p in (stage_metrics or {}).get(run, [])]
        rows.append(
            {
                "run": run,
                **{c: metrics.get(c, 0) for c in COST_COLUMNS[1:-1]},
                "stage_wall_seconds": float(sum(m.get("wall_seconds", 0.0) for m in stage)),
            }
        )
    return pd.DataFrame(rows, columns=COST_COLUMNS)


def graph_cost(
    runs: Sequence[str], graph_cfg: dict[str, Any], manifest_path: str | os.PathLike
) -> dict[str, dict[str, int]]:
    """The skills graph's training runs (units × repeats, their steps and examples), as the extra
    cost of every run in `runs` whose strategy needs the graph (Skill-It); none for a given or a
    gradient graph."""
    users = registry.with_need("strategy", "graph", runs)
    if not users:
        return {}
    runs_cfg = complete("graph.runs", graph_cfg.get("runs"))
    slugs = [s["slug"] for s in read_manifest(manifest_path)["skills"]]
    count = len(graph_units(graph_cfg["method"], slugs)) * runs_cfg["repeats"]
    cost = {
        "extra_runs": count,
        "extra_steps": count * runs_cfg["steps"],
        "extra_examples": count * runs_cfg["steps"] * runs_cfg["batch_size"],
    }
    return {run: cost for run in users}


def mixture_summary(
    runs: Sequence[str], mixture_paths: Sequence[str | os.PathLike], count_paths: Sequence[str | os.PathLike]
) -> pd.DataFrame:
    """Per run and skill: the mixture of its last segment (`final`) and the share of the run's
    training examples the skill got (`average`, counted from the examples drawn)."""
    frames = []
    for run, mixture_path, count_path in zip(runs, mixture_paths, count_paths, strict=True):
        mixture = pd.read_parquet(mixture_path)
        last = mixture[mixture["step"] == mixture["step"].max()].set_index("skill")["weight"]
        counts = pd.read_parquet(count_path).groupby("skill", sort=False)["count"].sum()
        frames.append(
            pd.DataFrame(
                {
                    "run": run,
                    "skill": counts.index,
                    "final": last.reindex(counts.index).to_numpy(),
                    "average": (counts / counts.sum()).to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def compare_runs(
    metrics_paths: Sequence[str | os.PathLike], summary_path: str | os.PathLike, plot_path: str | os.PathLike
) -> pd.DataFrame:
    """Mean loss and accuracy over skills for every run, split and step; table and plot."""
    metrics = pd.concat([pd.read_parquet(p) for p in metrics_paths], ignore_index=True)
    summary = (
        metrics.groupby(["run", "split", "step"], sort=False)
        .agg(
            loss=("loss", "mean"),
            accuracy=("accuracy", "mean"),
            exact=("exact", "mean"),
            skills=("skill", "nunique"),
        )
        .reset_index()
    )
    write_parquet(summary, summary_path)
    plot_comparison(summary, plot_path)
    return summary


def compare_costs_and_weights(
    runs: Sequence[str],
    train_outputs: dict[str, Sequence[str | os.PathLike]],
    outputs: dict[str, str | os.PathLike],
    stage_metrics: dict[str, Sequence[str | os.PathLike]] | None = None,
    graph_cost: dict[str, dict[str, int]] | None = None,
) -> None:
    """The comparison's cost table and the runs' mixtures side by side (table and figure).

    `train_outputs` holds, per run in `runs` order, its `mixture`, `skill_counts` and `metrics`
    (job_metrics.json) files; `outputs` names `costs`, `weights` (tables) and `weights_plot`."""
    write_parquet(run_costs(runs, train_outputs["metrics"], stage_metrics, graph_cost), outputs["costs"])
    weights = mixture_summary(runs, train_outputs["mixture"], train_outputs["skill_counts"])
    write_parquet(weights, outputs["weights"])
    plot_weights(weights, outputs["weights_plot"])
