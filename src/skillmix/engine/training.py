"""The training loop: batches drawn by a skill sampler, periodic evaluation, resume states.

:func:`train` runs it; the passes of each step are :class:`skillmix.engine.step_passes.StepPasses`,
the resume states :mod:`skillmix.engine.resume`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pandas as pd
import torch
from tqdm import tqdm

from skillmix.engine.distributed import full_tensor, parallel_model, reshard
from skillmix.engine.encoding import EncodedSet
from skillmix.engine.evaluation import METRIC_COLUMNS, evaluate_skills
from skillmix.engine.modeling import Runtime
from skillmix.engine.resume import History, latest_resume_state, load_resume_state, save_resume_state
from skillmix.engine.sampling import SkillSampler
from skillmix.engine.step_passes import StepPasses
from skillmix.infra import processes
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@runtime_checkable
class RoundSets(Protocol):
    """Training sets that change every round (e.g. :class:`skillmix.engine.fresh.FreshSets`)."""

    def for_round(self, round_: int, counts: Any) -> list[EncodedSet]:
        """The sets of round `round_`, `counts[i]` examples of skill i."""
        ...


@dataclass
class TrainSettings:
    """Optimisation and bookkeeping settings of one training run (the `train` config block).

    The defaults are the schema's defaults of the `train` block (a test keeps them equal); the
    graph runs and LESS's trainings build theirs from their own validated blocks.
    """

    steps: int = 600
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    lr: float = 3e-3
    warmup_steps: int = 30
    schedule: str = "linear"
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    seed: int = 0
    parallel: str = "ddp"
    eval_every: int = 100
    eval_accuracy: bool = True
    eval_score: str = "auto"
    update_steps: int = 100
    resume_every: int = 100
    keep_resume: bool = False

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TrainSettings:
        """Settings from a config block; keys that are not settings are ignored."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in cfg.items() if k in names}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


@dataclass
class TrainResult:
    """Histories of a finished (or stopped) run."""

    steps: pd.DataFrame
    skill_counts: pd.DataFrame
    val_curve: pd.DataFrame
    mixtures: pd.DataFrame
    resumed_from: int | None
    completed: bool
    wall_seconds: float = 0.0


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-serialisable values (the identity of a run's inputs)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def batch_split(batch_size: int, n_processes: int, accumulation: int) -> tuple[int, int]:
    """(examples per process, examples per forward pass) of one optimiser step of `batch_size` examples
    shared by `n_processes` processes, each accumulating gradients over `accumulation` passes."""
    if accumulation < 1:
        raise SkillmixInputError(f"gradient_accumulation_steps must be >= 1, got {accumulation}")
    if batch_size % (n_processes * accumulation):
        raise SkillmixInputError(
            f"batch_size {batch_size} is not divisible by {n_processes} process(es) x "
            f"gradient_accumulation_steps {accumulation}: every process needs the same whole number of "
            "examples per forward pass"
        )
    per_process = batch_size // n_processes
    return per_process, per_process // accumulation


def make_optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on biases, norms or 1-d parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=s.lr, betas=s.betas, eps=s.eps)


OnStep = Callable[[int, torch.nn.Module, torch.optim.Optimizer, list[dict[str, Any]]], None]


class _Loop:
    """One training run in progress: the model as its processes hold it, its optimiser and
    schedule, its sampler, the passes of a step and the history so far."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        sampler: SkillSampler,
        settings: TrainSettings,
        runtime: Runtime,
        val_sets: list[EncodedSet] | None,
        eval_batch_size: int,
        reference: torch.nn.Module | None,
    ) -> None:
        self.model, self.tokenizer, self.sampler = model, tokenizer, sampler
        self.settings, self.runtime = settings, runtime
        self.val_sets, self.eval_batch_size = val_sets, eval_batch_size
        torch.manual_seed(settings.seed)
        model.to(runtime.device)
        model.train()
        net = parallel_model(model, runtime, settings.parallel)
        self.optimizer = make_optimizer(model, settings)
        from transformers import get_scheduler  # (imports peft through trainer_utils: training jobs only)

        self.scheduler = get_scheduler(
            settings.schedule,
            self.optimizer,
            num_warmup_steps=settings.warmup_steps,
            num_training_steps=settings.steps,
        )
        self.history = History()
        self.main = processes.is_main()
        split = batch_split(settings.batch_size, processes.world_size(), settings.gradient_accumulation_steps)
        if sampler.needs_reference:
            reference.to(runtime.device)
            reference.eval()
        self.passes = StepPasses(net, runtime, tokenizer.pad_token_id, sampler, split, reference)

    def start(self, state_dir: Path | None, fingerprint_: str) -> int | None:
        """Resume from the newest matching resume state (returns its step), or start afresh: clear
        `state_dir` and evaluate the initial model (returns None)."""
        found = latest_resume_state(state_dir, fingerprint_)
        if found is not None:
            start, self.history = load_resume_state(
                found, self.model, self.optimizer, self.scheduler, self.sampler
            )
            log.info("resuming from %s (step %d of %d)", found, start, self.settings.steps)
            return start
        if self.main and state_dir is not None and state_dir.exists():
            shutil.rmtree(state_dir)
        processes.barrier()
        if self.val_sets:
            self.evaluate(0)
        return None

    def evaluate(self, step: int) -> None:
        """Evaluate the validation sets after `step`, record them and pass them to the sampler."""
        s = self.settings
        metrics = evaluate_skills(
            self.model,
            self.tokenizer,
            self.val_sets,
            self.runtime,
            self.eval_batch_size,
            accuracy=s.eval_accuracy,
            score=s.eval_score,
        )
        metrics.insert(0, "step", step)
        self.history.curve.extend(metrics.to_dict("records"))
        self.sampler.observe(step, dict(zip(metrics["skill"], metrics["loss"], strict=True)))
        log.info(
            "step %d: mean val loss %.4f, mean accuracy %.3f",
            step,
            metrics["loss"].mean(),
            metrics["accuracy"].mean(),
        )
        reshard(self.model)
        self.model.train()

    def step(self, step: int, train_sets: list[EncodedSet] | RoundSets, params: list[torch.Tensor]) -> None:
        """One optimiser step on the sampler's batch; records its row and its skill counts."""
        sampler, settings = self.sampler, self.settings
        pairs = sampler.sample(step, settings.batch_size)
        if isinstance(train_sets, RoundSets):
            sets = train_sets.for_round(sampler.round_of(step), sampler.plan_counts())
        else:
            sets = train_sets
        lr = self.scheduler.get_last_lr()[0]
        loss, n_tokens = self.passes.run(step, pairs, sets)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at step {step}")
        clip = settings.grad_clip if settings.grad_clip else math.inf
        grad_norm = float(full_tensor(torch.nn.utils.clip_grad_norm_(params, clip)))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.history.steps.append(
            {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "n_tokens": n_tokens}
        )
        counts = [0] * len(sampler.skills)
        for s, _ in pairs:
            counts[s] += 1
        self.history.counts.extend(
            {"step": step, "skill": skill, "count": c}
            for skill, c in zip(sampler.skills, counts, strict=True)
        )

    def after_step(
        self, step: int, on_step: OnStep | None, state_dir: Path | None, fingerprint_: str
    ) -> None:
        """What follows an optimiser step: `on_step`, a due evaluation, a due resume state."""
        s = self.settings
        if on_step is not None:
            on_step(step, self.model, self.optimizer, self.history.steps)
        due = step % s.eval_every == 0 or step == s.steps or self.sampler.needs_eval(step)
        if self.val_sets and due:
            self.evaluate(step)
        if state_dir is not None and s.resume_every and step % s.resume_every == 0:
            save_resume_state(
                state_dir,
                step,
                self.model,
                self.optimizer,
                self.scheduler,
                self.sampler,
                self.history,
                fingerprint_,
                write=self.main,
            )
            processes.barrier()

    def result(self, resumed_from: int | None, completed: bool, t0: float) -> TrainResult:
        """The run's histories as tables."""
        h = self.history
        return TrainResult(
            steps=pd.DataFrame(h.steps, columns=["step", "loss", "lr", "grad_norm", "n_tokens"]),
            skill_counts=pd.DataFrame(h.counts, columns=["step", "skill", "count"]),
            val_curve=pd.DataFrame(h.curve, columns=["step", *METRIC_COLUMNS]),
            mixtures=pd.DataFrame(self.sampler.mixture_rows(), columns=["round", "step", "skill", "weight"]),
            resumed_from=resumed_from,
            completed=completed,
            wall_seconds=time.perf_counter() - t0,
        )


def _check_inputs(
    train_sets: list[EncodedSet] | RoundSets, sampler: SkillSampler, reference: torch.nn.Module | None
) -> None:
    """Refuse training sets the sampler cannot index and a missing reference model."""
    if isinstance(train_sets, RoundSets) != sampler.fresh:
        raise ValueError("fresh training sets need a sampler in fresh mode, and only they do")
    if sampler.needs_reference and reference is None:
        raise ValueError(
            f"the {sampler.name!r} sampler needs a reference model's losses on each batch: "
            "pass train(..., reference=<model>)"
        )


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_sets: list[EncodedSet] | RoundSets,
    sampler: SkillSampler,
    settings: TrainSettings,
    runtime: Runtime,
    *,
    val_sets: list[EncodedSet] | None = None,
    eval_batch_size: int | None = None,
    resume_dir: str | Path | None = None,
    fingerprint_: str = "",
    stop_after: int | None = None,
    on_step: OnStep | None = None,
    reference: torch.nn.Module | None = None,
) -> TrainResult:
    """Train `model` for `settings.steps` optimiser steps on batches drawn by `sampler`.

    `train_sets` is the fixed pool, one set per skill, or :class:`RoundSets` that give every
    round its own new examples (the sampler must then be in fresh mode).
    The loss is the mean over the batch's label tokens; a sampler with `needs_batch_losses` sees
    each step's statistics before its backward pass and may weigh the loss per skill, and one with
    `needs_reference` needs `reference`, a model of the same tokenizer that runs on the same batches
    (:mod:`skillmix.engine.step_passes`). The validation sets are evaluated
    before the first step, every `eval_every` steps and after the last step, in batches of
    `eval_batch_size` (default: the schema's `eval.batch_size`); each evaluation is passed to
    `sampler.observe`. With a `resume_dir`, a resume state is written every
    `resume_every` steps and a matching one is resumed from. `stop_after` ends the run
    early after that step (as an interruption would), leaving its resume states in place.
    `on_step(step, model, optimizer, step_rows)` runs after every optimiser step, before that
    step's resume state (step_rows: the per-step history so far: step, loss, lr, ...).

    Each step's `batch_size` examples are split over the job's processes
    (:mod:`skillmix.infra.processes`) and, within a process, over `gradient_accumulation_steps`
    forward passes; a step's update is the same however it is split (within float rounding).
    `settings.parallel` chooses how the processes hold the model
    (:func:`skillmix.engine.distributed.parallel_model`: ddp or fsdp). Every process samples
    the same batches, evaluates the same model and runs `on_step` (which must write from the first
    process only); the first writes resume states. Under FSDP the model stays sharded when the run
    ends (:func:`skillmix.engine.distributed.unsharded` gives it whole).
    """
    t0 = time.perf_counter()
    _check_inputs(train_sets, sampler, reference)
    if eval_batch_size is None:
        eval_batch_size = complete("eval", None)["batch_size"]
    state_dir = Path(resume_dir) if resume_dir is not None else None
    loop = _Loop(model, tokenizer, sampler, settings, runtime, val_sets, eval_batch_size, reference)
    resumed_from = loop.start(state_dir, fingerprint_)
    start = resumed_from or 0
    params = [p for p in model.parameters() if p.requires_grad]
    completed = True
    bar = tqdm(
        range(start + 1, settings.steps + 1),
        initial=start,
        total=settings.steps,
        file=sys.stderr,
        mininterval=5.0,
        desc="train",
        disable=not loop.main,
    )
    for step in bar:
        loop.step(step, train_sets, params)
        loop.after_step(step, on_step, state_dir, fingerprint_)
        if stop_after is not None and step >= stop_after and step < settings.steps:
            completed = False
            break
    bar.close()
    processes.barrier()
    if loop.main and completed and state_dir is not None and not settings.keep_resume and state_dir.exists():
        shutil.rmtree(state_dir)
    return loop.result(resumed_from, completed, t0)
