"""Resume states of a training run: everything needed to continue it as if it had never stopped.

A resume state holds the trainable weights, the optimizer and scheduler state, the sampler
state, the RNG state and the history so far; a run restarted with the same fingerprint
continues from the newest one and ends with the same weights and histories as a run that
was never interrupted. Tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from skillmix.engine.distributed import full_tensor, load_full_, shard_like
from skillmix.engine.sampling import SkillSampler
from skillmix.infra.artefacts import safetensors_problem
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_directory

log = logging.getLogger(__name__)


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
    for old in [*directory.glob("step-*"), *directory.glob(".step-*.tmp-*")]:  # and killed saves'
        if old != target and old.is_dir():
            shutil.rmtree(old)
    return target


STATE_FILES = ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors")
_META_KEYS = {"step", "fingerprint", "optimizer", "scheduler", "sampler", "history"}


def _read_meta(path: Path) -> dict[str, Any]:
    """A resume state's state.json, checked for the keys `load_resume_state` reads."""
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or not _META_KEYS <= set(meta):
        raise ValueError(f"state.json lacks {sorted(_META_KEYS - set(meta or {}))}")
    if not isinstance(meta["step"], int) or not {"param_groups", "scalars"} <= set(meta["optimizer"]):
        raise ValueError("state.json has no integer step or no optimizer param_groups/scalars")
    if not {"steps", "counts", "curve"} <= set(meta["history"]):
        raise ValueError("state.json's history lacks steps/counts/curve")
    return meta


def resume_state_problem(path: Path) -> str | None:
    """What makes a resume state folder unusable (a file missing, cut short or not parsable), or None."""
    try:
        _read_meta(path)
        for name in STATE_FILES:
            problem = safetensors_problem(path / name)
            if problem is not None:
                return f"{name}: {problem}"
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def latest_resume_state(directory: Path | None, fingerprint_: str) -> Path | None:
    """The newest whole resume state written for this fingerprint, if any.

    A resume state is a cache: one that is damaged (a file missing, cut short or edited, e.g. by a
    crash part way through removing it) is passed over with a logged warning, and the run resumes
    from an older whole one or, with none, starts afresh (`Trainer.start` then clears the folder).
    """
    if directory is None or not directory.is_dir():
        return None
    for path in sorted(directory.glob("step-*"), reverse=True):
        if not path.is_dir():
            continue
        problem = resume_state_problem(path)
        if problem is not None:
            log.warning(
                "resume state %s is damaged (%s); it is discarded and not resumed from", path, problem
            )
            continue
        if _read_meta(path)["fingerprint"] == fingerprint_:
            return path
    return None


def _read_state(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any], dict]:
    """Every file of a resume state, read before anything is restored: (meta, weights, optimizer
    state_dict, rng states). Raises naming the folder to delete when one cannot be read."""
    try:
        meta = _read_meta(path)
        weights = load_file(path / STATE_FILES[0])
        state = join_optimizer_state(load_file(path / STATE_FILES[1]), meta["optimizer"])
        rng = load_file(path / STATE_FILES[2])
        rng["torch"]  # noqa: B018 - required, checked before anything is restored
    except (OSError, ValueError, TypeError, KeyError, SafetensorError) as exc:
        raise SkillmixInputError(
            f"resume state {path} is damaged ({type(exc).__name__}: {exc}); delete the folder "
            f"{path.parent} and run again: the run then starts afresh"
        ) from exc
    return meta, weights, state, rng


def load_resume_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sampler: SkillSampler,
) -> tuple[int, History]:
    """Restore everything `save_resume_state` wrote (into this process's shards under FSDP);
    returns (step, history)."""
    meta, weights, state, rng = _read_state(path)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = set(trainable) - set(weights)
    if missing:
        raise ValueError(f"resume state {path} lacks trainable parameters: {sorted(missing)[:5]}")
    for name, param in trainable.items():
        load_full_(param, weights[name])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.shape == params[idx].shape:
                entry[key] = shard_like(value, params[idx])
    optimizer.load_state_dict(state)
    scheduler.load_state_dict(meta["scheduler"])
    sampler.load_state_dict(meta["sampler"])
    torch.set_rng_state(rng["torch"])
    cuda_states = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    h = meta["history"]
    return int(meta["step"]), History(h["steps"], h["counts"], h["curve"])
