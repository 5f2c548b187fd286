"""Training with LoRA for whole epochs on a fixed example set: the recipe of LESS's warm-up,
shared by the warm-up (:mod:`skillmix.selection.warmup`) and the training on a selection
(:mod:`skillmix.selection.train_selected`).

The recipe is a `select.warmup` block: AdamW with its learning-rate schedule (linear by default)
and a warm-up ratio over `epochs` passes, batches from
:class:`skillmix.engine.sampling.EpochSampler` (every example once per epoch), fresh LoRA
adapters from `select.lora`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skillmix.engine.encoding import EncodedSet
from skillmix.engine.modeling import Runtime, apply_lora, load_model, select_runtime
from skillmix.engine.sampling import EpochSampler
from skillmix.engine.training import TrainResult, TrainSettings, fingerprint, train
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.selection.targets import encode_skills


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
