"""Resume states of a training run: everything needed to continue it as if it had never stopped.

A resume state holds the trainable weights, the optimizer and scheduler state, the sampler
state, the RNG state and the history so far; a run restarted with the same fingerprint
continues from the newest one and ends with the same weights and histories as a run that
was never interrupted. Tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from skillmix.engine.distributed import full_tensor, load_full_, shard_like
from skillmix.engine.sampling import SkillSampler
from skillmix.infra.jobs import atomic_directory


@dataclass
class History:
    """The per-step rows, per-step skill counts and validation curve of a run so far."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    counts: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)


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
    history: History,
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
) -> tuple[int, History]:
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
    return int(meta["step"]), History(h["steps"], h["counts"], h["curve"])
