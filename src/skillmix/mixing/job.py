"""The `train` rule's job: one training strategy (Skill-It, a baseline, a curriculum, …) on the
sliced skills, the same engine and budget for every strategy."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skillmix.data.slicing import read_manifest
from skillmix.engine.encoding import EncodedSet
from skillmix.engine.evaluation import example_losses
from skillmix.engine.modeling import Runtime
from skillmix.engine.sampling import MixingInputs
from skillmix.engine.training import TrainSettings
from skillmix.engine.training_run import RunData, TrainingRun, fresh_training_sets, load_run_data
from skillmix.graph.store import read_graph
from skillmix.infra import registry
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.strategies import build_sampler, read_mixture_file, skill_subset, strategy_settings


def run_graph(graph_dir: str | os.PathLike, train_skills: list[str], eval_skills: list[str]) -> np.ndarray:
    """The skills graph restricted to training-skill rows and evaluation-skill columns."""
    matrix, rows, columns = read_graph(graph_dir)
    missing = [s for s in train_skills if s not in rows] + [s for s in eval_skills if s not in columns]
    if missing:
        raise SkillmixInputError(f"skills graph in {graph_dir} has no row or column for skills {missing}")
    return matrix[np.ix_([rows.index(s) for s in train_skills], [columns.index(s) for s in eval_skills])]


def initial_example_losses(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sets: list[EncodedSet], runtime: Runtime
) -> list[list[float]]:
    """The initial model's mean answer-token loss of every training example (curriculum scores)."""
    model.to(runtime.device)
    model.eval()
    losses = [example_losses(model, s, tokenizer.pad_token_id, runtime, 64) for s in sets]
    model.train()
    return losses


def _check_pool(strategy: str, data: RunData, settings: TrainSettings) -> None:
    """A strategy that draws each pool example once needs a pool at least the budget."""
    pool, budget = sum(len(s) for s in data.train_sets), settings.steps * settings.batch_size
    if pool < budget:
        raise SkillmixInputError(
            f"train.strategies {strategy}: the budget of train.steps × train.batch_size = {budget} "
            f"examples exceeds the pool of {pool} training examples; a curriculum draws each "
            "example once, so give it a pool at least the budget (more examples per skill in "
            "the source, or fewer steps)"
        )


def mixing_inputs(
    strategy: str,
    data: RunData,
    settings: TrainSettings,
    train_skills: list[str],
    targets: list[str],
    graph_dir: str | os.PathLike | None,
    mixture_path: str | os.PathLike | None = None,
) -> MixingInputs:
    """What the run hands the strategy's sampler: what its registry entry needs, and no more."""
    needs = registry.lookup("strategy", strategy, "train.strategies").needs
    eval_skills = targets or train_skills
    inputs = MixingInputs(
        skills=train_skills,
        sizes=[len(s) for s in data.train_sets],
        seed=settings.seed,
        update_steps=settings.update_steps,
        eval_skills=eval_skills,
        targets=targets,
        steps=settings.steps,
        batch_size=settings.batch_size,
        eval_every=settings.eval_every,
    )
    if "mixture_file" in needs:
        if mixture_path is None:
            raise SkillmixInputError(f"the {strategy} strategy trains on a mixture file its stage writes")
        inputs.mixture = read_mixture_file(mixture_path, train_skills)
    if "graph" in needs:
        if graph_dir is None:
            raise SkillmixInputError(f"the {strategy} strategy needs a skills graph (graph_dir)")
        inputs.graph = run_graph(graph_dir, train_skills, eval_skills)
    if "pool" in needs:
        _check_pool(strategy, data, settings)
    if "example_losses" in needs:
        inputs.example_losses = initial_example_losses(
            data.model, data.tokenizer, data.train_sets, data.runtime
        )
    return inputs


def prepare_run(
    strategy: str,
    manifest_path: str | os.PathLike,
    train_paths: Sequence[str | os.PathLike],
    val_paths: Sequence[str | os.PathLike],
    *,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    strategy_cfg: dict[str, Any] | None = None,
    graph_dir: str | os.PathLike | None = None,
    source_cfg: dict[str, Any] | None = None,
    mixture_path: str | os.PathLike | None = None,
) -> TrainingRun:
    """Load the model, encode the slices and build the sampler of one strategy.

    Training covers `train.skills` (all skills by default); validation covers every skill.
    Strategies that read validation losses evaluate on `train.target_skills` when given
    (fine-tuning when they are training skills, out-of-domain when they are not), else on the
    training skills; Skill-It reads its graph from `graph_dir`, the strategies whose mixture a stage of
    their own wrote (DoReMi, RegMix) read it from `mixture_path`. `strategy_cfg` holds the
    strategy's own settings block. With `train.data: fresh` (a synthetic `source_cfg`), every
    round trains on new examples (:mod:`skillmix.engine.fresh`), except for strategies that order
    the fixed pool (the curricula). The pool's sizes still define the natural mixture.
    """
    eval_cfg = complete("eval", eval_cfg)
    train_cfg = complete("train", train_cfg)
    model_cfg = complete("model", model_cfg)
    strategy_cfg = strategy_settings(strategy, strategy_cfg)
    skills = [s["name"] for s in read_manifest(manifest_path)["skills"]]
    train_skills = skill_subset(train_cfg.get("skills"), skills, "train.skills")
    named_targets = train_cfg.get("target_skills")
    targets = skill_subset(named_targets, skills, "train.target_skills") if named_targets else []
    data = load_run_data(
        model_cfg,
        train_skills,
        skills,
        train_paths,
        val_paths,
        eval_cfg.get("max_examples_per_skill"),
        train_cfg["loss_on"],
        eval_cfg["eos_in_loss"],
    )
    settings = TrainSettings.from_config(
        {**train_cfg, "eval_score": eval_cfg["score"], "parallel": model_cfg["parallel"]}
    )
    fresh = fresh_training_sets(
        train_cfg["data"],
        "train.data",
        source_cfg,
        train_skills,
        data.tokenizer,
        model_cfg,
        settings.seed,
        train_cfg["loss_on"],
    )
    inputs = mixing_inputs(strategy, data, settings, train_skills, targets, graph_dir, mixture_path)
    sampler = build_sampler(strategy, inputs, strategy_cfg)
    graph = None if inputs.graph is None else inputs.graph.tolist()
    # what the resume fingerprint hashes (`aggregate: auto` resolves from train_cfg's skills)
    identity = [model_cfg, train_cfg, eval_cfg, strategy, strategy_cfg, graph]
    return data.training_run(sampler, settings, fresh, eval_cfg["batch_size"], identity, source_cfg)


def train_job(
    strategy: str,
    manifest: str,
    train: list[str],
    val: list[str],
    *,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    strategy_cfg: dict[str, Any] | None,
    graph_dir: str | None,
    source_cfg: dict[str, Any] | None,
    resume: str | None,
    outputs: dict[str, str],
    stop_after: int | None = None,
    stamp: dict[str, Any] | None = None,
    mixture: str | None = None,
) -> None:
    """The `train` rule's job (in each of its processes): prepare the strategy's run, train it, and
    write `outputs` (model, steps, skill_counts, val_curve, mixture, metrics) from the first process;
    the steps table carries `stamp` (the settings it was made with, `skillmix.infra.stamps`).

    `stop_after` ends the run after that step, as an interruption would: resume states stay, no
    outputs are written."""
    from skillmix.engine.distributed import unsharded
    from skillmix.engine.modeling import load_model, save_model
    from skillmix.infra import processes
    from skillmix.infra.jobs import JobClock, write_json, write_parquet

    run = prepare_run(
        strategy,
        manifest,
        train,
        val,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        eval_cfg=eval_cfg,
        strategy_cfg=strategy_cfg,
        graph_dir=graph_dir,
        source_cfg=source_cfg,
        mixture_path=mixture,
    )
    clock = JobClock(run.runtime.device)
    result = run.train(resume_dir=resume, stop_after=stop_after)
    if not result.completed:
        return
    model = unsharded(run.model, lambda: load_model(model_cfg)[0])
    if not processes.is_main():
        return
    save_model(model, run.tokenizer, outputs["model"], model_cfg)
    write_parquet(result.steps, outputs["steps"], stamp=stamp)
    write_parquet(result.skill_counts, outputs["skill_counts"])
    write_parquet(result.val_curve, outputs["val_curve"])
    write_parquet(result.mixtures, outputs["mixture"])
    metrics = clock.metrics(
        resumed_from=result.resumed_from, steps=run.settings.steps, processes=processes.world_size()
    )
    # the cost of the method beside the run's budget: training outside it, validation passes
    evaluations = int(result.val_curve["step"].nunique()) if len(result.val_curve) else 0
    write_json({**metrics, **run.sampler.cost(), "evaluations": evaluations}, outputs["metrics"])
