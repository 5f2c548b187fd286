"""The training loop: batches drawn by a skill sampler, periodic evaluation, resume states.

A resume state holds the trainable weights, the optimizer and scheduler state, the sampler
state, the RNG state and the history so far; a run restarted with the same fingerprint
continues from the newest one and ends with the same weights and histories as a run that
was never interrupted. Tensors go to safetensors, everything else to JSON.
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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_scheduler

from skillmix.engine.distributed import (
    full_tensor,
    load_full_,
    parallel_model,
    reshard,
    set_gradient_sync,
    shard_like,
)
from skillmix.engine.encoding import EncodedSet, collate, label_token_losses
from skillmix.engine.evaluation import METRIC_COLUMNS, evaluate_skills
from skillmix.engine.modeling import Runtime
from skillmix.engine.sampling import SkillSampler
from skillmix.infra import processes
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_directory

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


@dataclass
class _History:
    steps: list[dict[str, Any]] = field(default_factory=list)
    counts: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)


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


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name, whole (gathered from their shards under FSDP, in every
    process), detached, contiguous, on the CPU."""
    return {
        n: full_tensor(p).detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad
    }


def split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state_dict as (tensors for safetensors, everything else for JSON); tensors whole
    (gathered from their shards under FSDP, in every process)."""
    tensors, rest = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = full_tensor(value).detach().contiguous().cpu()
            else:
                rest["scalars"][f"{idx}.{key}"] = value
    return tensors, rest


def join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """The optimizer state_dict that `split_optimizer_state` took apart."""
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *rest["scalars"].items()]:
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_resume_state(
    directory: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sampler: SkillSampler,
    history: _History,
    fingerprint_: str,
    write: bool = True,
) -> Path:
    """Write the resume state of `step` atomically and remove older ones.

    Every process of a job calls it (under FSDP the weights and optimizer state are gathered from
    their shards); the one with `write` writes.
    """
    target = directory / f"step-{step:08d}"
    opt_tensors, opt_rest = split_optimizer_state(optimizer.state_dict())
    weights = trainable_state(model)
    if not write:
        return target
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {
        "step": step,
        "fingerprint": fingerprint_,
        "optimizer": opt_rest,
        "scheduler": scheduler.state_dict(),
        "sampler": sampler.state_dict(),
        "history": {"steps": history.steps, "counts": history.counts, "curve": history.curve},
    }
    with atomic_directory(target) as tmp:
        save_file(weights, tmp / "trainable.safetensors")
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        save_file(rng, tmp / "rng.safetensors")
        (tmp / "state.json").write_text(json.dumps(meta))
    for old in directory.glob("step-*"):
        if old != target and old.is_dir():
            shutil.rmtree(old)
    return target


def latest_resume_state(directory: Path | None, fingerprint_: str) -> Path | None:
    """The newest complete resume state written for this fingerprint, if any."""
    if directory is None or not directory.is_dir():
        return None
    for path in sorted(directory.glob("step-*"), reverse=True):
        state = path / "state.json"
        if state.is_file() and json.loads(state.read_text()).get("fingerprint") == fingerprint_:
            return path
    return None


def load_resume_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sampler: SkillSampler,
) -> tuple[int, _History]:
    """Restore everything `save_resume_state` wrote (into this process's shards under FSDP);
    returns (step, history)."""
    meta = json.loads((path / "state.json").read_text())
    weights = load_file(path / "trainable.safetensors")
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = set(trainable) - set(weights)
    if missing:
        raise ValueError(f"resume state {path} lacks trainable parameters: {sorted(missing)[:5]}")
    for name, param in trainable.items():
        load_full_(param, weights[name])
    state = join_optimizer_state(load_file(path / "optimizer.safetensors"), meta["optimizer"])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.shape == params[idx].shape:
                entry[key] = shard_like(value, params[idx])
    optimizer.load_state_dict(state)
    scheduler.load_state_dict(meta["scheduler"])
    sampler.load_state_dict(meta["sampler"])
    rng = load_file(path / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    cuda_states = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    h = meta["history"]
    return int(meta["step"]), _History(h["steps"], h["counts"], h["curve"])


def _evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    val_sets: list[EncodedSet],
    runtime: Runtime,
    batch_size: int,
    step: int,
    sampler: SkillSampler,
    history: _History,
    accuracy: bool = True,
    score: str = "auto",
) -> None:
    metrics = evaluate_skills(model, tokenizer, val_sets, runtime, batch_size, accuracy=accuracy, score=score)
    metrics.insert(0, "step", step)
    history.curve.extend(metrics.to_dict("records"))
    sampler.observe(step, dict(zip(metrics["skill"], metrics["loss"], strict=True)))
    log.info(
        "step %d: mean val loss %.4f, mean accuracy %.3f",
        step,
        metrics["loss"].mean(),
        metrics["accuracy"].mean(),
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
    on_step: Callable[[int, torch.nn.Module, torch.optim.Optimizer, list[dict[str, Any]]], None]
    | None = None,
) -> TrainResult:
    """Train `model` for `settings.steps` optimiser steps on batches drawn by `sampler`.

    `train_sets` is the fixed pool, one set per skill, or :class:`RoundSets` that give every
    round its own new examples (the sampler must then be in fresh mode).
    The loss is the mean over the batch's label tokens. The validation sets are evaluated
    before the first step, every `eval_every` steps and after the last step, in batches of
    `eval_batch_size` (default: the schema's `eval.batch_size`); each evaluation is passed to
    `sampler.observe`. With a `resume_dir`, a resume state is written every
    `resume_every` steps and a matching one is resumed from. `stop_after` ends the run
    early after that step (as an interruption would), leaving its resume states in place.
    `on_step(step, model, optimizer, step_rows)` runs after every optimiser step, before that
    step's resume state (step_rows: the per-step history so far: step, loss, lr, ...).

    Each step's `batch_size` examples are split over the job's processes
    (:mod:`skillmix.infra.processes`; PyTorch DDP averages their gradients) and, within a process,
    over `gradient_accumulation_steps` forward passes; the loss is the mean over the label tokens
    of the whole step's batch however it is split, so a step's update is the same on one process
    and on several (within float rounding). `settings.parallel` chooses how the processes hold the
    model (:func:`skillmix.engine.distributed.parallel_model`: ddp or fsdp). Every process samples
    the same batches, evaluates the same model and runs `on_step` (which must write from the first
    process only); the first writes resume states. Under FSDP the model stays sharded when the run
    ends (:func:`skillmix.engine.distributed.unsharded` gives it whole).
    """
    t0 = time.perf_counter()
    if eval_batch_size is None:
        eval_batch_size = complete("eval", None)["batch_size"]
    state_dir = Path(resume_dir) if resume_dir is not None else None
    torch.manual_seed(settings.seed)
    model.to(runtime.device)
    model.train()
    net = parallel_model(model, runtime, settings.parallel)
    optimizer = make_optimizer(model, settings)
    scheduler = get_scheduler(
        settings.schedule,
        optimizer,
        num_warmup_steps=settings.warmup_steps,
        num_training_steps=settings.steps,
    )
    history = _History()
    start, resumed_from = 0, None

    def evaluate_at(step: int) -> None:
        _evaluate(
            model,
            tokenizer,
            val_sets,
            runtime,
            eval_batch_size,
            step,
            sampler,
            history,
            settings.eval_accuracy,
            settings.eval_score,
        )
        reshard(model)
        model.train()

    main = processes.is_main()
    n_proc, proc = processes.world_size(), processes.rank()
    per_process, micro = batch_split(settings.batch_size, n_proc, settings.gradient_accumulation_steps)
    found = latest_resume_state(state_dir, fingerprint_)
    if found is not None:
        start, history = load_resume_state(found, model, optimizer, scheduler, sampler)
        resumed_from = start
        log.info("resuming from %s (step %d of %d)", found, start, settings.steps)
    else:
        if main and state_dir is not None and state_dir.exists():
            shutil.rmtree(state_dir)
        processes.barrier()
        if val_sets:
            evaluate_at(0)
    pad = tokenizer.pad_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    completed = True
    bar = tqdm(
        range(start + 1, settings.steps + 1),
        initial=start,
        total=settings.steps,
        file=sys.stderr,
        mininterval=5.0,
        desc="train",
        disable=not main,
    )
    per_round = isinstance(train_sets, RoundSets)
    if per_round != sampler.fresh:
        raise ValueError("fresh training sets need a sampler in fresh mode, and only they do")
    for step in bar:
        pairs = sampler.sample(step, settings.batch_size)
        sets = (
            train_sets.for_round(sampler.round_of(step), sampler.plan_counts()) if per_round else train_sets
        )
        lr = scheduler.get_last_lr()[0]
        # the loss is the mean over the label tokens of the whole step's batch, whichever process
        # and forward pass a token falls in; DDP averages the processes' gradients
        n_tokens = sum(sets[s].label_counts[i] for s, i in pairs)
        denominator = max(n_tokens, 1)
        mine = pairs[proc * per_process : (proc + 1) * per_process]
        local_sum = 0.0
        for first in range(0, per_process, micro):
            chunk = mine[first : first + micro]
            batch = collate(
                [sets[s].input_ids[i] for s, i in chunk], [sets[s].labels[i] for s, i in chunk], pad
            )
            batch = {k: v.to(runtime.device) for k, v in batch.items()}
            if n_proc > 1:  # gradients are averaged over the processes after the step's last pass only
                set_gradient_sync(net, first + micro >= per_process)
            with runtime.autocast():
                losses, _ = label_token_losses(net, batch)
            part = losses.sum()
            (part / denominator * n_proc).backward()
            local_sum += part.item()
        loss = processes.sum_over_processes(local_sum) / denominator
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at step {step}")
        clip = settings.grad_clip if settings.grad_clip else math.inf
        grad_norm = float(full_tensor(torch.nn.utils.clip_grad_norm_(params, clip)))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        history.steps.append(
            {
                "step": step,
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "n_tokens": n_tokens,
            }
        )
        counts = [0] * len(sampler.skills)
        for s, _ in pairs:
            counts[s] += 1
        history.counts.extend(
            {"step": step, "skill": skill, "count": c}
            for skill, c in zip(sampler.skills, counts, strict=True)
        )
        if on_step is not None:
            on_step(step, model, optimizer, history.steps)
        due = step % settings.eval_every == 0 or step == settings.steps or sampler.needs_eval(step)
        if val_sets and due:
            evaluate_at(step)
        if state_dir is not None and settings.resume_every and step % settings.resume_every == 0:
            save_resume_state(
                state_dir, step, model, optimizer, scheduler, sampler, history, fingerprint_, write=main
            )
            processes.barrier()
        if stop_after is not None and step >= stop_after and step < settings.steps:
            completed = False
            break
    bar.close()
    processes.barrier()
    if main and completed and state_dir is not None and not settings.keep_resume and state_dir.exists():
        shutil.rmtree(state_dir)
    return TrainResult(
        steps=pd.DataFrame(history.steps, columns=["step", "loss", "lr", "grad_norm", "n_tokens"]),
        skill_counts=pd.DataFrame(history.counts, columns=["step", "skill", "count"]),
        val_curve=pd.DataFrame(history.curve, columns=["step", *METRIC_COLUMNS]),
        mixtures=pd.DataFrame(sampler.mixture_rows(), columns=["round", "step", "skill", "weight"]),
        resumed_from=resumed_from,
        completed=completed,
        wall_seconds=time.perf_counter() - t0,
    )
