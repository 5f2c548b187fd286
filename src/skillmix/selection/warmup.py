"""LESS's LoRA warm-up: LoRA training on a random fraction of the candidate pool, in epochs, with
a checkpoint of the adapter and the optimizer state at the end of every epoch.

The warm-up subset of the pool is :func:`skillmix.selection.pool.warmup_indices`; training is the
epoch recipe of :mod:`skillmix.selection.epochs`. The epoch checkpoints are what the gradient
datastore reads (:func:`load_epoch_checkpoint`: the adapter for the gradients, the optimizer's
moments for LESS's Adam feature). Checkpoint weights are the mean learning rate of each epoch,
renormalised, as LESS weighs its checkpoints (Xia et al., 2024).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skillmix.engine.modeling import Runtime
from skillmix.engine.resume import join_optimizer_state, split_optimizer_state, trainable_state
from skillmix.engine.training import TrainResult
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_directory
from skillmix.selection.epochs import EpochRun, lora_model, prepare_epochs
from skillmix.selection.pool import warmup_indices

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
