"""LESS's LoRA warm-up: LoRA training on a random fraction of the candidate pool, in epochs.

The warm-up subset of the pool is :func:`skillmix.less.pool.warmup_indices`. Training is AdamW with a linear
schedule and a warm-up ratio over `epochs` passes; at the end of every epoch the adapter and
the optimizer state are written as an epoch checkpoint, which the gradient datastore reads.
Checkpoint weights are the mean learning rate of each epoch, renormalised (less.md §2).

`train_epochs` is also how the selected data (and the random baseline) are trained: the
warm-up recipe on another example set.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skillmix.engine.encoding import EncodedSet
from skillmix.engine.modeling import Runtime, apply_lora, load_model, select_runtime
from skillmix.engine.sampling import EpochSampler
from skillmix.engine.training import (
    TrainResult,
    TrainSettings,
    fingerprint,
    join_optimizer_state,
    split_optimizer_state,
    train,
    trainable_state,
)
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_directory
from skillmix.less.pool import warmup_indices
from skillmix.less.targets import encode_skills

log = logging.getLogger(__name__)


def checkpoint_weights(lrs_per_epoch: Sequence[Sequence[float]]) -> list[float]:
    """Mean learning rate of each epoch (LESS Def. 3.1), renormalised to sum 1."""
    means = []
    for e, lrs in enumerate(lrs_per_epoch):
        lrs = [float(v) for v in lrs]
        if not lrs:
            raise SkillmixInputError(f"checkpoint weights: epoch {e} has no learning rates")
        if not all(math.isfinite(v) and v >= 0 for v in lrs):
            raise SkillmixInputError(
                f"checkpoint weights: epoch {e} has a negative or non-finite learning rate"
            )
        means.append(sum(lrs) / len(lrs))
    total = sum(means)
    if not means or total <= 0:
        raise SkillmixInputError("checkpoint weights: need at least one epoch with a positive learning rate")
    return [m / total for m in means]


def epoch_settings(cfg: dict[str, Any], n_examples: int, epochs: int | None = None) -> TrainSettings:
    """TrainSettings of `epochs` passes over n examples: steps, linear warm-up from the ratio.

    `cfg` is a `select.warmup` recipe (missing keys take the schema's defaults), optionally with
    `eval_every` (steps between evaluations; default once at the end).
    """
    eval_every = cfg.get("eval_every")
    cfg = complete("select.warmup", {k: v for k, v in cfg.items() if k != "eval_every"})
    epochs = int(epochs if epochs is not None else cfg["epochs"])
    if epochs < 1:
        raise SkillmixInputError(f"epochs must be >= 1, got {epochs}")
    batch = cfg["batch_size"]
    steps = epochs * max(1, math.ceil(n_examples / batch))
    return TrainSettings(
        steps=steps,
        batch_size=batch,
        gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
        lr=float(cfg["lr"]),
        warmup_steps=math.ceil(float(cfg["warmup_ratio"]) * steps),
        schedule=cfg["schedule"],
        weight_decay=float(cfg["weight_decay"]),
        grad_clip=cfg["grad_clip"],
        seed=cfg["seed"],
        eval_every=int(eval_every or steps),
        resume_every=max(1, math.ceil(n_examples / batch)),
    )


def lora_model(
    model_cfg: dict[str, Any], lora_cfg: dict[str, Any], seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Runtime]:
    """The configured base model with fresh LoRA adapters from `lora_cfg` (initialised from `seed`),
    its tokenizer and runtime."""
    model_cfg = complete("model", {**model_cfg, "lora": {"enabled": False}})
    model, tokenizer = load_model(model_cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = apply_lora(model, complete("select.lora", lora_cfg))
    runtime = select_runtime(model_cfg["device"], model_cfg["precision"])
    return model, tokenizer, runtime


@dataclass
class EpochRun:
    """A LoRA model ready to train for whole epochs on a fixed example set."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    runtime: Runtime
    train_sets: list[EncodedSet]
    val_sets: list[EncodedSet]
    settings: TrainSettings
    fingerprint: str
    eval_batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return self.settings.resume_every

    def train(
        self,
        resume_dir: str | os.PathLike | None = None,
        on_step: Callable[..., None] | None = None,
        stop_after: int | None = None,
    ) -> TrainResult:
        """Train all epochs (resuming from a matching resume state in `resume_dir`)."""
        sampler = EpochSampler(
            [s.skill for s in self.train_sets],
            [len(s) for s in self.train_sets],
            self.settings.seed,
            self.settings.batch_size,
        )
        return train(
            self.model,
            self.tokenizer,
            self.train_sets,
            sampler,
            self.settings,
            self.runtime,
            val_sets=self.val_sets or None,
            eval_batch_size=self.eval_batch_size,
            resume_dir=resume_dir,
            fingerprint_=self.fingerprint,
            stop_after=stop_after,
            on_step=on_step,
        )


def prepare_epochs(
    model_cfg: dict[str, Any],
    lora_cfg: dict[str, Any],
    recipe: dict[str, Any],
    examples: pd.DataFrame,
    eval_examples: pd.DataFrame | None = None,
    epochs: int | None = None,
    eval_batch_size: int | None = None,
    eval_accuracy: bool = True,
) -> EpochRun:
    """LoRA training on `examples` (columns id, skill, prompt, answer, text) with the warm-up recipe.

    `eval_examples` (columns id, skill, prompt, answer, text) are evaluated per skill before
    training, every `recipe.eval_every` steps and at the end, in batches of `eval_batch_size`
    (default: the schema's `eval.batch_size`).
    """
    if examples.empty:
        raise SkillmixInputError("no examples to train on")
    settings = epoch_settings(recipe, len(examples), epochs)
    settings.eval_accuracy = eval_accuracy
    settings.parallel = complete("model", model_cfg)["parallel"]
    model, tokenizer, runtime = lora_model(model_cfg, lora_cfg, settings.seed)
    max_length = complete("model", model_cfg)["max_length"]
    train_sets = encode_skills(tokenizer, examples, max_length)
    val_sets = []
    if eval_examples is not None and len(eval_examples):
        val_sets = encode_skills(tokenizer, eval_examples, max_length)
    digest = fingerprint(
        model_cfg,
        lora_cfg,
        recipe,
        epochs,
        examples["id"].tolist(),
        None if eval_examples is None else eval_examples["id"].tolist(),
    )
    batch = eval_batch_size or complete("eval", None)["batch_size"]
    return EpochRun(model, tokenizer, runtime, train_sets, val_sets, settings, digest, batch)


ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
"""The files of a peft adapter folder (what `peft.PeftModel.from_pretrained` reads)."""


def save_epoch_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    step: int,
    lrs: Sequence[float],
    lora_cfg: dict[str, Any],
) -> None:
    """Write an epoch checkpoint atomically: a peft adapter folder (adapter_model.safetensors,
    adapter_config.json) with the optimizer state and the checkpoint's metadata beside it.

    Every process of a job calls it (under FSDP the adapter and optimizer state are gathered from
    their shards); the first writes.
    """
    from peft import get_peft_model_state_dict

    from skillmix.infra import processes

    tensors, rest = split_optimizer_state(optimizer.state_dict())
    trainable = trainable_state(model)
    # peft's file names (the adapter name dropped), in every process: nothing after this gathers
    adapter = get_peft_model_state_dict(model, state_dict=trainable, save_embedding_layers=False)
    if not processes.is_main():
        return
    meta = {
        "epoch": epoch,
        "step": step,
        "mean_lr": float(np.mean(lrs)),
        "steps_in_epoch": len(lrs),
        "lora": lora_cfg,
        "trainable": list(trainable),
    }
    with atomic_directory(path) as tmp:
        save_file({k: v.contiguous() for k, v in adapter.items()}, tmp / ADAPTER_FILES[0], {"format": "pt"})
        config = model.peft_config["default"]
        config.save_pretrained(tmp)
        save_file(tensors, tmp / "optimizer.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(rest))
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=1))


def read_epoch_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The adapter weights (peft's names, as in adapter_model.safetensors) and the optimizer
    state_dict of an epoch checkpoint.

    Stops with SkillmixInputError when the adapter or the optimizer state is missing.
    """
    path = Path(path)
    adapter, opt_tensors, opt_json = (
        path / ADAPTER_FILES[0],
        path / "optimizer.safetensors",
        path / "optimizer.json",
    )
    if not adapter.is_file():
        raise SkillmixInputError(f"warm-up checkpoint {path}: no adapter weights ({adapter.name})")
    if not opt_tensors.is_file() or not opt_json.is_file():
        raise SkillmixInputError(
            f"warm-up checkpoint {path}: no optimizer state ({opt_tensors.name} and {opt_json.name}); "
            "the Adam gradient feature needs the optimizer's moments saved with the checkpoint"
        )
    return load_file(adapter), join_optimizer_state(load_file(opt_tensors), json.loads(opt_json.read_text()))


def load_epoch_checkpoint(
    path: str | os.PathLike, model_cfg: dict[str, Any], lora_cfg: dict[str, Any]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Runtime, dict[str, Any]]:
    """The LoRA model of an epoch checkpoint, its tokenizer, runtime and the optimizer state_dict.

    Stops with SkillmixInputError when the adapter or the optimizer state is missing or does
    not fit the configured model.
    """
    weights, state = read_epoch_checkpoint(path)
    model, tokenizer, runtime = lora_model(model_cfg, lora_cfg)
    load_adapter(model, weights, path)
    return model, tokenizer, runtime, state


def load_adapter(model: torch.nn.Module, weights: dict[str, torch.Tensor], origin: Any) -> None:
    """Set a peft LoRA model's adapter from `weights` (peft's names: exactly the adapter's tensors)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    expected = set(get_peft_model_state_dict(model))
    if set(weights) != expected:
        raise SkillmixInputError(
            f"warm-up checkpoint {origin}: adapter tensors do not match the configured LoRA "
            f"(missing {sorted(expected - set(weights))[:3]}, "
            f"unexpected {sorted(set(weights) - expected)[:3]})"
        )
    set_peft_model_state_dict(model, weights)


def run_warmup(
    run: EpochRun,
    epoch_dirs: Sequence[str | os.PathLike],
    lora_cfg: dict[str, Any],
    resume_dir: str | os.PathLike | None = None,
    stop_after: int | None = None,
) -> tuple[TrainResult, list[float], list[float]]:
    """Train the warm-up, writing epoch checkpoint e to epoch_dirs[e-1].

    Returns (result, checkpoint weights, mean learning rate of each epoch).
    """
    spe = run.steps_per_epoch
    epochs = run.settings.steps // spe
    if len(epoch_dirs) != epochs:
        raise SkillmixInputError(f"warm-up: {epochs} epochs but {len(epoch_dirs)} checkpoint folders")

    def on_step(step: int, model, optimizer, step_rows) -> None:
        if step % spe == 0:
            epoch = step // spe
            lrs = [r["lr"] for r in step_rows if (r["step"] - 1) // spe == epoch - 1]
            save_epoch_checkpoint(epoch_dirs[epoch - 1], model, optimizer, epoch, step, lrs, lora_cfg)
            log.info(
                "epoch %d of %d done at step %d; checkpoint %s", epoch, epochs, step, epoch_dirs[epoch - 1]
            )

    result = run.train(resume_dir, on_step=on_step, stop_after=stop_after)
    lrs = result.steps.assign(epoch=(result.steps["step"] - 1) // spe)
    per_epoch = [g["lr"].tolist() for _, g in lrs.groupby("epoch", sort=True)]
    return result, checkpoint_weights(per_epoch), [float(np.mean(v)) for v in per_epoch]


def warmup_from_pool(
    model_cfg: dict[str, Any],
    lora_cfg: dict[str, Any],
    warmup_cfg: dict[str, Any],
    pool: pd.DataFrame,
    epoch_dirs: Sequence[str | os.PathLike],
    resume_dir: str | os.PathLike | None = None,
    stop_after: int | None = None,
) -> tuple[TrainResult, list[float], list[float], pd.DataFrame]:
    """The warm-up job: (training result, checkpoint weights, mean lr per epoch, the warm-up subset)."""
    warmup_cfg = complete("select.warmup", warmup_cfg)
    rows = warmup_indices(len(pool), warmup_cfg["fraction"], warmup_cfg["seed"])
    subset = pool.iloc[rows].reset_index(drop=True)
    log.info("warm-up on %d of %d pool examples for %d epochs", len(subset), len(pool), len(epoch_dirs))
    run = prepare_epochs(model_cfg, lora_cfg, warmup_cfg, subset, epochs=len(epoch_dirs))
    result, weights, mean_lrs = run_warmup(run, epoch_dirs, lora_cfg, resume_dir, stop_after)
    return result, weights, mean_lrs, subset


def warmup_job(
    pool: str,
    *,
    model_cfg: dict[str, Any],
    lora_cfg: dict[str, Any],
    warmup_cfg: dict[str, Any],
    checkpoints: list[str],
    names: list[str],
    resume: str | None,
    outputs: dict[str, str],
    stamp: dict[str, Any] | None = None,
) -> None:
    """The `warmup` rule's job (in each of its processes): the warm-up on the pool file, its epoch
    checkpoints, and `outputs` (subset, steps, weights) written by the first process."""
    from skillmix.infra import processes
    from skillmix.infra.jobs import write_json, write_parquet

    result, weights, mean_lrs, subset = warmup_from_pool(
        model_cfg, lora_cfg, warmup_cfg, pd.read_parquet(pool), checkpoints, resume_dir=resume
    )
    if not processes.is_main():
        return
    write_parquet(subset, outputs["subset"])
    write_parquet(result.steps, outputs["steps"])
    write_json(
        {
            "weights": dict(zip(names, weights, strict=True)),
            "mean_lr": dict(zip(names, mean_lrs, strict=True)),
            "resumed_from": result.resumed_from,
            "processes": processes.world_size(),
        },
        outputs["weights"],
    )


def train_selected_job(
    selected: str,
    evaluation: str,
    *,
    model_cfg: dict[str, Any],
    lora_cfg: dict[str, Any],
    warmup_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    resume: str | None,
    outputs: dict[str, str],
    stamp: dict[str, Any] | None = None,
) -> None:
    """The `train_selected` rule's job (in each of its processes): the warm-up recipe on a selection,
    tracking the evaluation set; `outputs` (model, steps, val_curve, metrics) from the first process."""
    from skillmix.engine.distributed import unsharded
    from skillmix.engine.modeling import save_model
    from skillmix.infra import processes
    from skillmix.infra.jobs import JobClock, write_json, write_parquet
    from skillmix.less.targets import first_per_skill

    held_out = first_per_skill(pd.read_parquet(evaluation), eval_cfg["max_examples_per_skill"])
    run = prepare_epochs(
        model_cfg,
        lora_cfg,
        dict(warmup_cfg, eval_every=train_cfg["eval_every"]),
        pd.read_parquet(selected),
        held_out,
        epochs=train_cfg["epochs"] or warmup_cfg["epochs"],
        eval_batch_size=eval_cfg["batch_size"],
    )
    clock = JobClock(run.runtime.device)
    result = run.train(resume_dir=resume)
    model = unsharded(run.model, lambda: lora_model(model_cfg, lora_cfg)[0])
    if not processes.is_main():
        return
    save_model(model, run.tokenizer, outputs["model"], model_cfg)
    write_parquet(result.steps, outputs["steps"], stamp=stamp)
    write_parquet(result.val_curve, outputs["val_curve"])
    metrics = clock.metrics(
        resumed_from=result.resumed_from, steps=run.settings.steps, processes=processes.world_size()
    )
    write_json(metrics, outputs["metrics"])
