"""The `doremi_proxy` rule's job: DoReMi's proxy run (Xie et al., "DoReMi: Optimizing Data Mixtures
Speeds Up Language Model Pretraining", NeurIPS 2023; docs/methods/mixers.md#doremi).

The proxy is the configured model from its initial weights, trained with the engine on a fixed
sampling mixture while :class:`skillmix.mixing.doremi.DoReMiProxySampler` learns the domain weights
from its per-token excess loss over a reference model (the folder a `train` run saved). The job
writes the averaged weights ᾱ (`weights.json`, read by the `doremi` strategy), the weights and scores
of every step (`trajectory.parquet`), the proxy's steps table and its job metrics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skillmix.data.slicing import read_manifest
from skillmix.engine.modeling import load_saved
from skillmix.engine.sampling import MixingInputs
from skillmix.engine.training import TrainResult, TrainSettings
from skillmix.engine.training_run import TrainingRun, file_digest, fresh_training_sets, load_run_data
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.doremi import DoReMiProxySampler, doremi_cost, entropy
from skillmix.mixing.strategies import skill_subset

log = logging.getLogger(__name__)

TRAJECTORY_COLUMNS = ["step", "skill", "weight", "score"]
STEP_COLUMNS = ["step", "loss", "lr", "grad_norm", "n_tokens", "max_weight", "weight_entropy"]
COLLAPSE = 0.9
"""ᾱ with a larger weight than this is reported as collapsed (a warning in weights.json)."""


def train_skills(manifest: str | os.PathLike, train_cfg: Mapping[str, Any]) -> list[str]:
    """The run's training skills: `train.skills` in manifest order, or every skill of the manifest."""
    skills = [s["name"] for s in read_manifest(manifest)["skills"]]
    return skill_subset(train_cfg.get("skills"), skills, "train.skills")


def load_reference(
    reference_dir: str | os.PathLike, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> PreTrainedModel:
    """The reference model saved in `reference_dir`, in the proxy's weight dtype; refused when its
    tokenizer's vocabulary or its output size differs from the proxy's."""
    try:
        reference, ref_tokenizer = load_saved(reference_dir)
    except OSError as exc:
        raise SkillmixInputError(f"DoReMi reference {reference_dir}: not a saved model ({exc})") from exc
    ours, theirs = tokenizer.get_vocab(), ref_tokenizer.get_vocab()
    out_ours = model.get_output_embeddings().weight.shape[0]
    out_theirs = reference.get_output_embeddings().weight.shape[0]
    if ours != theirs or out_ours != out_theirs:
        raise SkillmixInputError(
            f"DoReMi reference {reference_dir}: its tokenizer ({len(theirs)} tokens, {out_theirs} outputs) "
            f"differs from the proxy's ({len(ours)} tokens, {out_ours} outputs); the reference must be "
            "a run of the same model config"
        )
    return reference.to(model.dtype)


def folder_digest(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """(relative path, SHA-256) of every file under `folder`, sorted: a saved model's identity."""
    root = Path(folder)
    return sorted((str(p.relative_to(root)), file_digest(p)) for p in root.rglob("*") if p.is_file())


def proxy_run(
    manifest: str | os.PathLike,
    train: Sequence[str | os.PathLike],
    *,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    doremi_cfg: dict[str, Any],
    reference_dir: str | os.PathLike,
    source_cfg: dict[str, Any] | None = None,
) -> tuple[TrainingRun, DoReMiProxySampler]:
    """The proxy's training run (model from its initial weights, the training slices, the reference,
    no validation) and its sampler; train.steps is `doremi.proxy_steps` when set."""
    train_cfg, model_cfg = complete("train", train_cfg), complete("model", model_cfg)
    eval_cfg, doremi_cfg = complete("eval", eval_cfg), complete("doremi", doremi_cfg)
    skills = train_skills(manifest, train_cfg)
    data = load_run_data(model_cfg, skills, [], train, [], None, train_cfg["loss_on"])
    steps = doremi_cfg["proxy_steps"] or train_cfg["steps"]
    settings = TrainSettings.from_config(
        {**train_cfg, "steps": steps, "eval_score": eval_cfg["score"], "parallel": model_cfg["parallel"]}
    )
    inputs = MixingInputs(
        skills=skills,
        sizes=[len(s) for s in data.train_sets],
        seed=settings.seed,
        update_steps=settings.update_steps,
        eval_skills=skills,
    )
    sampler = DoReMiProxySampler.from_inputs(inputs, doremi_cfg, vocab_size=len(data.tokenizer))
    fresh = fresh_training_sets(
        train_cfg["data"],
        "train.data",
        source_cfg,
        skills,
        data.tokenizer,
        model_cfg,
        settings.seed,
        train_cfg["loss_on"],
    )
    reference = load_reference(reference_dir, data.model, data.tokenizer)
    identity = [
        model_cfg,
        {**train_cfg, "steps": steps},
        "doremi_proxy",
        doremi_cfg,
        folder_digest(reference_dir),
    ]
    run = data.training_run(sampler, settings, fresh, eval_cfg["batch_size"], identity, source_cfg)
    run.reference = reference
    return run, sampler


def weights_record(
    skills: list[str],
    weights: Sequence[float],
    *,
    stamp: Mapping[str, Any] | None,
    doremi_cfg: Mapping[str, Any],
    settings: TrainSettings,
    proxy_steps: int,
    cost: Mapping[str, int],
    note: str | None = None,
) -> dict[str, Any]:
    """The content of `weights.json`: ᾱ by skill name, the stamp, its max weight and entropy, the
    proxy's settings and steps, the method's cost (:func:`skillmix.mixing.doremi.doremi_cost`) and
    warnings (collapse, a batch smaller than the skills); `settings` are the main run's."""
    max_weight = float(max(weights))
    warnings = []
    if max_weight > COLLAPSE:
        top = skills[list(weights).index(max(weights))]
        warnings.append(
            f"the averaged weights put {max_weight:.3f} on {top!r} (above {COLLAPSE}): the proxy "
            "collapsed onto one skill; consider a smaller doremi.eta or a larger batch"
        )
    if settings.batch_size < len(skills):
        warnings.append(
            f"train.batch_size {settings.batch_size} is smaller than the {len(skills)} skills: some "
            "skills are absent from every batch and keep stale scores"
        )
    for w in warnings:
        log.warning("DoReMi: %s", w)
    record = {
        "weights": {s: float(w) for s, w in zip(skills, weights, strict=True)},
        "stamp": None if stamp is None else dict(stamp),
        "max_weight": max_weight,
        "entropy": entropy(list(weights)),
        "warnings": warnings,
        "settings": dict(doremi_cfg),
        "proxy_steps": proxy_steps,
        "batch_size": settings.batch_size,
        "cost": dict(cost),
    }
    if note is not None:
        record["note"] = note
    return record


def proxy_steps_table(result: TrainResult, sampler: DoReMiProxySampler) -> pd.DataFrame:
    """The proxy's steps table with, per step, the max and the entropy of α_t."""
    summary = pd.DataFrame(sampler.step_summary(), columns=["step", "max_weight", "weight_entropy"])
    return result.steps.merge(summary, on="step", how="left")[STEP_COLUMNS]


def _write_single_skill(
    skill: str, outputs: dict[str, str], stamp, doremi_cfg, settings: TrainSettings, clock
) -> None:
    """k = 1: ᾱ = [1] without a proxy run (empty trajectory and steps tables)."""
    from skillmix.infra.jobs import write_json, write_parquet

    note = "one training skill: the mixture is [1]; no proxy run"
    log.info("DoReMi: %s", note)
    none = {"extra_runs": 0, "extra_steps": 0, "extra_examples": 0, "extra_evaluations": 0}
    record = weights_record(
        [skill],
        [1.0],
        stamp=stamp,
        doremi_cfg=doremi_cfg,
        settings=settings,
        proxy_steps=0,
        cost=none,
        note=note,
    )
    write_json(record, outputs["weights"])
    write_parquet(pd.DataFrame(columns=TRAJECTORY_COLUMNS), outputs["trajectory"], stamp=stamp)
    write_parquet(pd.DataFrame(columns=STEP_COLUMNS), outputs["proxy_steps"], stamp=stamp)
    write_json(clock.metrics(resumed_from=None, steps=0, examples=0, note=note), outputs["metrics"])


def doremi_proxy_job(
    manifest: str,
    train: list[str],
    val: list[str],
    *,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    doremi_cfg: dict[str, Any] | None,
    reference_dir: str,
    outputs: dict[str, str],
    stamp: dict[str, Any] | None = None,
    resume: str | None = None,
    source_cfg: dict[str, Any] | None = None,
    stop_after: int | None = None,
    reference_stamps: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """The `doremi_proxy` rule's job (in each of its processes): train the proxy against the reference
    model in `reference_dir` and write `outputs` (weights, trajectory, proxy_steps, metrics) from the
    first process; `stamp` (the settings the outputs were made with) goes into each of them.

    The proxy runs no validation, so `val` is not read. With one training skill ᾱ = [1] and no
    model is trained or loaded. `stop_after` ends the run after that step, as an interruption would:
    resume states stay in `resume`, no outputs are written. `reference_stamps` ({file of the
    reference run: the stamp the config gives it now}) refuses a reference made with other settings;
    `source_cfg` is the source of `train.data: fresh`."""
    from skillmix.infra import processes
    from skillmix.infra.jobs import JobClock, write_json, write_parquet
    from skillmix.infra.stamps import check_stamps

    if reference_stamps:
        check_stamps(reference_stamps, "DoReMi reference outputs")
    doremi_cfg = complete("doremi", doremi_cfg)
    skills = train_skills(manifest, complete("train", train_cfg))
    if len(skills) == 1:
        settings = TrainSettings.from_config(complete("train", train_cfg))
        if processes.is_main():
            clock = JobClock(torch.device("cpu"))
            _write_single_skill(skills[0], outputs, stamp, doremi_cfg, settings, clock)
        return
    run, sampler = proxy_run(
        manifest,
        train,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        eval_cfg=eval_cfg,
        doremi_cfg=doremi_cfg,
        reference_dir=reference_dir,
        source_cfg=source_cfg,
    )
    clock = JobClock(run.runtime.device)
    result = run.train(resume_dir=resume, stop_after=stop_after)
    if not result.completed or not processes.is_main():
        return
    settings = TrainSettings.from_config(complete("train", train_cfg))
    record = weights_record(
        sampler.skills,
        sampler.average_weights().tolist(),
        stamp=stamp,
        doremi_cfg=doremi_cfg,
        settings=settings,
        proxy_steps=run.settings.steps,
        cost=doremi_cost(settings.steps, settings.batch_size, run.settings.steps),
    )
    trajectory = pd.DataFrame(sampler.trajectory_rows(), columns=TRAJECTORY_COLUMNS)
    write_parquet(trajectory, outputs["trajectory"], stamp=stamp)
    write_parquet(proxy_steps_table(result, sampler), outputs["proxy_steps"], stamp=stamp)
    metrics = clock.metrics(
        resumed_from=result.resumed_from,
        steps=run.settings.steps,
        examples=run.settings.steps * run.settings.batch_size,
        processes=processes.world_size(),
    )
    write_json(metrics, outputs["metrics"])
    write_json(record, outputs["weights"])  # last: the main run's input appears when all is written
