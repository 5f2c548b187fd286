"""A model trained by several processes: DDP (each process holds the whole model, gradients are
averaged) or FSDP (PyTorch's `fully_shard`: each process holds a shard of every weight, of its
gradient and of the optimizer state; a weight is gathered only while its layer runs).

`model.parallel` chooses; with one process both are the model itself. Under FSDP a weight is a
DTensor: :func:`full_tensor` gathers one (a collective: every process calls it, in the same order),
:func:`load_full_` and :func:`shard_like` put full tensors back into shards.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from skillmix.engine.modeling import Runtime
from skillmix.infra import processes
from skillmix.infra.errors import SkillmixInputError

PARALLEL_MODES = ("ddp", "fsdp")


def _dtensor():
    from torch.distributed.tensor import DTensor

    return DTensor


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a DTensor (an FSDP shard)."""
    return processes.world_size() > 1 and isinstance(tensor, _dtensor())


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: gathered from its shards (collective) or the tensor itself."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def load_full_(param: torch.Tensor, value: torch.Tensor) -> None:
    """Copy the whole tensor `value` into `param` (into this process's shard of it, under FSDP)."""
    with torch.no_grad():
        param.copy_(shard_like(value.to(param.dtype), param))


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`value` (a whole tensor of `like`'s shape) sharded as `like` is; `value` itself for plain tensors."""
    if not is_sharded(like):
        return value.to(like.device)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(like.device_mesh.device_type), like.device_mesh, like.placements)


def _layer_classes(model: torch.nn.Module) -> set[str]:
    """The class names of a transformers model's repeated blocks (`_no_split_modules`)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(getattr(inner, "_no_split_modules", None) or [])


def parallel_model(model: torch.nn.Module, runtime: Runtime, mode: str = "ddp") -> torch.nn.Module:
    """`model` made ready for data-parallel training over the job's processes, to be called in every
    process before its optimizer is made: wrapped in DDP, or sharded in place with FSDP (each repeated
    block, e.g. LlamaDecoderLayer, then the rest). With one process, the model itself.
    """
    if mode not in PARALLEL_MODES:
        raise SkillmixInputError(f"model.parallel must be one of {PARALLEL_MODES}, got {mode!r}")
    if processes.world_size() == 1:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    from skillmix.engine.frozen_prefix import has_frozen_lower_layers

    if has_frozen_lower_layers(model):
        raise SkillmixInputError(
            "model.parallel fsdp with lora.top_layers: the frozen lower layers run outside the sharded "
            "model; use model.parallel ddp"
        )
    classes = _layer_classes(model)
    blocks = [m for m in model.modules() if type(m).__name__ in classes]
    if not blocks:
        raise SkillmixInputError(
            f"model.parallel fsdp: {type(model).__name__} names no repeated blocks "
            "(_no_split_modules) to shard"
        )
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def set_gradient_sync(net: torch.nn.Module, enabled: bool) -> None:
    """Whether the next backward pass averages gradients over the processes (off between the forward
    passes of one accumulated step)."""
    if hasattr(net, "set_requires_gradient_sync"):  # FSDP
        net.set_requires_gradient_sync(enabled)
    elif hasattr(net, "require_backward_grad_sync"):  # DDP
        net.require_backward_grad_sync = enabled


def is_sharded_model(model: torch.nn.Module) -> bool:
    """Whether `model`'s weights are FSDP shards."""
    return any(is_sharded(p) for p in model.parameters())


def unsharded(model: torch.nn.Module, rebuild: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
    """The trained model, whole, for saving: `model` itself unless it is sharded; else (every process
    calls this) its weights gathered into `rebuild()` (a new model of the same architecture, built
    in the first process), which the first process gets and the others get None."""
    if not is_sharded_model(model):
        return model
    state = {name: full_tensor(t).detach().cpu() for name, t in model.state_dict().items()}
    if not processes.is_main():
        return None
    whole = rebuild()
    whole.load_state_dict(state)
    return whole


def reshard(model: torch.nn.Module) -> None:
    """Free the gathered weights of an FSDP model after evaluation (generation leaves some blocks
    whole, and a whole block would then take local gradients for shards); nothing otherwise."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
