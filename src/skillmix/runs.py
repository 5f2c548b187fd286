"""A training run assembled from config blocks and slice files: model, encoded data, sampler."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skillmix.encoding import EncodedSet, encode_frame
from skillmix.errors import SkillmixInputError
from skillmix.evaluation import METRIC_COLUMNS, evaluate_skills, example_losses
from skillmix.fresh import FreshSets
from skillmix.graph.store import read_graph
from skillmix.graph.units import unit_slugs
from skillmix.jobs import write_parquet
from skillmix.modeling import Runtime, load_model, load_saved, select_runtime
from skillmix.plotting import plot_comparison, plot_mixture, plot_skill_curves
from skillmix.sampling import SkillSampler, make_sampler
from skillmix.sources import SYNTHETIC_KINDS
from skillmix.training import TrainResult, TrainSettings, fingerprint, train


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_sets(
    tokenizer: PreTrainedTokenizerBase,
    skills: Sequence[str],
    paths: Sequence[str | os.PathLike],
    max_length: int,
    limit: int | None = None,
    loss_on: str = "answer",
    eos_label: bool = True,
) -> list[EncodedSet]:
    """Encode one split's slice files, in the order of `skills` (the manifest's order).

    `limit` keeps the first rows of each slice (evaluation caps); `loss_on` and `eos_label` choose
    the label tokens (see :func:`skillmix.encoding.encode_row`).
    """
    frames: dict[str, pd.DataFrame] = {}
    for path in paths:
        frame = pd.read_parquet(path)
        if frame.empty:
            raise SkillmixInputError(f"{path}: slice file has no rows")
        frames[str(frame["skill"].iloc[0])] = frame
    missing = [s for s in skills if s not in frames]
    if missing:
        raise SkillmixInputError(f"no slice file given for skills {missing}")
    return [
        encode_frame(
            tokenizer,
            frames[s] if limit is None else frames[s].head(limit),
            s,
            max_length,
            loss_on,
            eos_label,
        )
        for s in skills
    ]


@dataclass
class TrainingRun:
    """Everything one training job needs, ready to train."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    runtime: Runtime
    train_sets: list[EncodedSet] | FreshSets
    val_sets: list[EncodedSet]
    sampler: SkillSampler
    settings: TrainSettings
    eval_batch_size: int
    fingerprint: str

    def train(
        self, checkpoint_dir: str | os.PathLike | None = None, stop_after: int | None = None
    ) -> TrainResult:
        """Train (resuming from a matching checkpoint in `checkpoint_dir`)."""
        return train(
            self.model,
            self.tokenizer,
            self.train_sets,
            self.sampler,
            self.settings,
            self.runtime,
            val_sets=self.val_sets,
            eval_batch_size=self.eval_batch_size,
            checkpoint_dir=checkpoint_dir,
            fingerprint_=self.fingerprint,
            stop_after=stop_after,
        )


def _skill_subset(names: Sequence[str] | None, skills: list[str], key: str) -> list[str]:
    """Named skills in manifest order (all of them when `names` is empty); unknown names are errors."""
    if not names:
        return list(skills)
    unknown = [n for n in names if n not in skills]
    if unknown:
        raise SkillmixInputError(f"{key}: {unknown} are not skills of the data; skills are {skills}")
    return [s for s in skills if s in names]


def skillit_graph(
    graph_dir: str | os.PathLike, train_skills: list[str], eval_skills: list[str]
) -> np.ndarray:
    """The skills graph restricted to training-skill rows and evaluation-skill columns."""
    matrix, rows, columns = read_graph(graph_dir)
    missing = [s for s in train_skills if s not in rows] + [s for s in eval_skills if s not in columns]
    if missing:
        raise SkillmixInputError(f"skills graph in {graph_dir} has no row or column for skills {missing}")
    return matrix[np.ix_([rows.index(s) for s in train_skills], [columns.index(s) for s in eval_skills])]


CURRICULA_WITH_POOL = ("curriculum", "anticurriculum")


def fresh_training_sets(
    data: str,
    key: str,
    source_cfg: dict[str, Any] | None,
    skills: list[str],
    tokenizer: PreTrainedTokenizerBase,
    model_cfg: dict[str, Any],
    seed: int,
    loss_on: str = "answer",
) -> FreshSets | None:
    """The fresh-example sets of a run whose `key` (e.g. `train.data`) is `fresh`; None for `pool`."""
    if data == "pool":
        return None
    if data != "fresh":
        raise SkillmixInputError(f"config {key}: expected pool or fresh, got {data!r}")
    kind = (source_cfg or {}).get("kind")
    if kind not in SYNTHETIC_KINDS:
        raise SkillmixInputError(
            f"config {key}: fresh needs a synthetic source (source.kind one of {list(SYNTHETIC_KINDS)}) "
            f"that can generate new examples; source.kind is {kind!r}: use {key}: pool"
        )
    return FreshSets(source_cfg, skills, tokenizer, model_cfg.get("max_length", 128), seed, loss_on)


def initial_example_losses(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sets: list[EncodedSet], runtime: Runtime
) -> list[list[float]]:
    """The initial model's mean answer-token loss of every training example (curriculum scores)."""
    model.to(runtime.device)
    model.eval()
    losses = [example_losses(model, s, tokenizer.pad_token_id, runtime, 64) for s in sets]
    model.train()
    return losses


def _load(
    model_cfg: dict[str, Any],
    train_skills: list[str],
    val_skills: list[str],
    train_paths: Sequence[str | os.PathLike],
    val_paths: Sequence[str | os.PathLike],
    val_limit: int | None,
    loss_on: str = "answer",
    val_eos: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Runtime, list[EncodedSet], list[EncodedSet]]:
    """The model, its runtime, and the encoded training and validation sets of a run.

    Training labels follow `loss_on` (with end-of-sequence); validation labels are the answer
    tokens, with end-of-sequence when `val_eos`.
    """
    model, tokenizer = load_model(model_cfg)
    runtime = select_runtime(model_cfg.get("device", "auto"), model_cfg.get("precision", "auto"))
    max_length = model_cfg.get("max_length", 128)
    train_sets = load_sets(tokenizer, train_skills, train_paths, max_length, loss_on=loss_on)
    val_sets = load_sets(tokenizer, val_skills, val_paths, max_length, val_limit, eos_label=val_eos)
    return model, tokenizer, runtime, train_sets, val_sets


def prepare_run(
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    strategy: str,
    manifest_path: str | os.PathLike,
    train_paths: Sequence[str | os.PathLike],
    val_paths: Sequence[str | os.PathLike],
    strategy_cfg: dict[str, Any] | None = None,
    graph_dir: str | os.PathLike | None = None,
    source_cfg: dict[str, Any] | None = None,
) -> TrainingRun:
    """Load the model, encode the slices and build the sampler of one strategy.

    Training covers `train.skills` (all skills by default); validation covers every skill.
    Skill-It evaluates on `train.target_skills` when given (fine-tuning when they are
    training skills, out-of-domain when they are not), else on the training skills, and
    reads its graph from `graph_dir`. `strategy_cfg` holds the strategy's own settings.
    With `train.data: fresh` (a synthetic `source_cfg`), every round trains on new examples
    (:mod:`skillmix.fresh`), except for curriculum and anticurriculum, which order the fixed
    pool by the initial model's losses. The pool's sizes still define the natural mixture.
    """
    manifest = json.loads(Path(manifest_path).read_text())
    skills = [s["name"] for s in manifest["skills"]]
    train_skills = _skill_subset(train_cfg.get("skills"), skills, "train.skills")
    named_targets = train_cfg.get("target_skills")
    targets = _skill_subset(named_targets, skills, "train.target_skills") if named_targets else []
    model, tokenizer, runtime, train_sets, val_sets = _load(
        model_cfg,
        train_skills,
        skills,
        train_paths,
        val_paths,
        eval_cfg.get("max_examples_per_skill"),
        train_cfg.get("loss_on", "answer"),
        eval_cfg.get("eos_in_loss", False),
    )
    settings = TrainSettings.from_config({**train_cfg, "eval_score": eval_cfg.get("score", "auto")})
    strategy_cfg = dict(strategy_cfg or {})
    graph = None
    eval_skills = targets or train_skills
    if strategy == "skillit":
        if graph_dir is None:
            raise SkillmixInputError("the skillit strategy needs a skills graph (graph_dir)")
        graph = skillit_graph(graph_dir, train_skills, eval_skills)
        if strategy_cfg.get("aggregate", "auto") == "auto":
            fine_tuning = bool(targets) and set(targets) <= set(train_skills)
            strategy_cfg["aggregate"] = "mean" if fine_tuning else "sum"
    losses = None
    data = train_cfg.get("data", "pool")
    fresh = fresh_training_sets(
        data,
        "train.data",
        source_cfg,
        train_skills,
        tokenizer,
        model_cfg,
        settings.seed,
        train_cfg.get("loss_on", "answer"),
    )
    if strategy in CURRICULA_WITH_POOL:
        fresh = None
        pool, budget = sum(len(s) for s in train_sets), settings.steps * settings.batch_size
        if pool < budget:
            raise SkillmixInputError(
                f"train.strategies {strategy}: the budget of train.steps × train.batch_size = {budget} "
                f"examples exceeds the pool of {pool} training examples; a curriculum draws each "
                "example once, so give it a pool at least the budget (more examples per skill in "
                "the source, or fewer steps)"
            )
    if strategy in ("curriculum", "anticurriculum", "skill_curriculum"):
        losses = initial_example_losses(model, tokenizer, train_sets, runtime)
    sampler = make_sampler(
        strategy,
        train_skills,
        [len(s) for s in train_sets],
        settings.seed,
        settings.update_steps,
        graph=graph,
        eval_skills=eval_skills,
        targets=targets,
        skillit=strategy_cfg,
        curriculum=strategy_cfg,
        example_losses=losses,
    )
    if fresh is not None:
        sampler.use_fresh()
    digest = fingerprint(
        model_cfg,
        train_cfg,
        eval_cfg,
        strategy,
        strategy_cfg,
        None if graph is None else graph.tolist(),
        [file_digest(p) for p in [*train_paths, *val_paths]],
        None if fresh is None else source_cfg,
    )
    return TrainingRun(
        model,
        tokenizer,
        runtime,
        train_sets if fresh is None else fresh,
        val_sets,
        sampler,
        settings,
        eval_cfg.get("batch_size", 64),
        digest,
    )


def prepare_graph_unit(
    model_cfg: dict[str, Any],
    runs_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    unit: str,
    manifest_path: str | os.PathLike,
    train_paths: Sequence[str | os.PathLike],
    val_dir: str | os.PathLike,
    source_cfg: dict[str, Any] | None = None,
) -> TrainingRun:
    """One graph-learning run: train on the unit's skills (equal mix) from the initial model.

    With `graph.runs.data: fresh` (a synthetic `source_cfg`) it trains on new examples
    instead of the unit's training slices (:mod:`skillmix.fresh`).

    Every skill's validation loss is measured (loss only, no generation) before training,
    every `eval_every` steps and at the end, from the slices in `val_dir` (one
    `{slug}.parquet` per skill of the manifest: the folder is the job's one input, which keeps
    the DAG of thousands of pair runs small).
    """
    manifest = json.loads(Path(manifest_path).read_text())
    val_paths = [Path(val_dir) / f"{s['slug']}.parquet" for s in manifest["skills"]]
    by_slug = {s["slug"]: s["name"] for s in manifest["skills"]}
    skills = [s["name"] for s in manifest["skills"]]
    unknown = [slug for slug in unit_slugs(unit) if slug not in by_slug]
    if unknown:
        raise SkillmixInputError(f"graph unit {unit!r}: no skill with slug {unknown} in {manifest_path}")
    unit_skills = [by_slug[slug] for slug in unit_slugs(unit)]
    model, tokenizer, runtime, train_sets, val_sets = _load(
        model_cfg,
        unit_skills,
        skills,
        train_paths,
        val_paths,
        runs_cfg.get("eval_examples"),
        val_eos=eval_cfg.get("eos_in_loss", False),
    )
    settings = TrainSettings.from_config({**runs_cfg, "eval_accuracy": False, "checkpoint_every": 0})
    sampler = SkillSampler(
        unit_skills, [len(s) for s in train_sets], np.ones(len(unit_skills)), settings.seed, settings.steps
    )
    fresh = fresh_training_sets(
        runs_cfg.get("data", "pool"),
        "graph.runs.data",
        source_cfg,
        unit_skills,
        tokenizer,
        model_cfg,
        settings.seed,
    )
    if fresh is not None:
        sampler.use_fresh()
    digest = fingerprint(
        model_cfg,
        runs_cfg,
        unit,
        [file_digest(p) for p in [*train_paths, *val_paths]],
        None if fresh is None else source_cfg,
    )
    return TrainingRun(
        model,
        tokenizer,
        runtime,
        train_sets if fresh is None else fresh,
        val_sets,
        sampler,
        settings,
        eval_cfg.get("batch_size", 64),
        digest,
    )


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
) -> pd.DataFrame:
    """Test-split metrics of a trained model joined to its validation curve; table and plot.

    The metrics table has one row per (split, step, skill): the validation rows come from
    training, the test rows are measured here at the final step.
    """
    manifest = json.loads(Path(manifest_path).read_text())
    skills = [s["name"] for s in manifest["skills"]]
    model, tokenizer = load_saved(model_dir)
    runtime = select_runtime(model_cfg.get("device", "auto"), model_cfg.get("precision", "auto"))
    model.to(runtime.device)
    test_sets = load_sets(
        tokenizer,
        skills,
        test_paths,
        model_cfg.get("max_length", 128),
        eval_cfg.get("max_examples_per_skill"),
        eos_label=eval_cfg.get("eos_in_loss", False),
    )
    test = evaluate_skills(
        model,
        tokenizer,
        test_sets,
        runtime,
        eval_cfg.get("batch_size", 64),
        score=eval_cfg.get("score", "auto"),
    )
    final_step = int(pd.read_parquet(steps_path)["step"].max())
    test.insert(0, "step", final_step)
    test.insert(0, "split", "test")
    val = pd.read_parquet(val_curve_path)
    val.insert(0, "split", "val")
    metrics = pd.concat([val, test], ignore_index=True)
    metrics.insert(0, "run", run)
    metrics = metrics[METRICS_COLUMNS]
    write_parquet(metrics, metrics_path)
    plot_skill_curves(
        val,
        plot_path,
        f"{run}: validation curves (test accuracy {test['accuracy'].mean():.3f}, "
        f"test loss {test['loss'].mean():.3f} at step {final_step})",
    )
    if mixture_path is not None and mixture_plot_path is not None:
        plot_mixture(pd.read_parquet(mixture_path), mixture_plot_path, f"{run}: training mixture over rounds")
    return metrics


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
