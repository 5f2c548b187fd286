"""Per-example gradients of the LoRA parameters of a peft model, computed batched.

The engine follows LESS (Xia et al., ICML 2024; docs/methods/less.md#per-example-gradients).
For each peft LoRA Linear layer the adapter path is `y += s · B(A(dropout(x)))`. In eval mode (dropout off) a
forward hook on `lora_A` records its input X_b [T, d_in] and output H_b = X_b Aᵀ [T, r]; a forward
hook on `lora_B` records its output U_b = H_b Bᵀ, and after the forward pass one
`torch.autograd.grad` call of the batch loss L = Σ_b ℓ_b (ℓ_b = example b's own mean label-token
loss) returns G_b = ∂L/∂U_b. The scaling s multiplies `lora_B`'s *output*, so G_b = s · ∂ℓ_b/∂y_b
already contains it and the per-example gradients are

    ∇B_b = G_bᵀ H_b          (= s · Δ_bᵀ H_b with Δ_b = ∂ℓ_b/∂y_b)
    ∇A_b = (G_b B)ᵀ X_b      (= s · (Δ_b B)ᵀ X_b)

exact because ℓ_b depends only on row b of the batch and padded positions carry G = 0.
Feature order: trainable parameters in `named_parameters()` order, each flattened row-major
(A is r×d_in, B is d_out×r).

Also here: the Adam update direction of LESS (both eps placements kept and named) and the
mapping of a torch AdamW state dict onto the flat feature order (docs/methods/less.md#adam-feature).
Transforms, projection and Gram matrices over these gradients are in `skillmix.engine.feature_transforms`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from skillmix.engine.encoding import IGNORE, EncodedSet, collate, example_mean_losses
from skillmix.engine.modeling import Runtime
from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)

ADAM_VARIANTS = ("less", "adam")


@dataclass
class ParamSlice:
    """One parameter's place in a flat feature vector (parameters in `named_parameters()` order)."""

    name: str
    shape: tuple[int, ...]
    offset: int  # offset into the flat feature vector

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class _Adapter:
    """One (peft LoRA Linear layer, adapter name) pair and the names of its A and B weights."""

    module: torch.nn.Module
    adapter: str
    a_name: str
    b_name: str


def _lora_adapters(model: torch.nn.Module) -> list[_Adapter]:
    """Every (LoRA layer, adapter) of `model` whose A or B weight is trainable."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    found: list[_Adapter] = []
    for mod_name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        prefix = f"{mod_name}." if mod_name else ""
        for adapter, lora_a in module.lora_A.items():
            lora_b = module.lora_B[adapter]
            if not (lora_a.weight.requires_grad or lora_b.weight.requires_grad):
                continue
            where = f"{prefix}lora_A.{adapter}"
            if not isinstance(module, LoraLinear):
                raise SkillmixInputError(
                    f"{where}: per-example gradients support peft LoRA Linear layers only, "
                    f"got {type(module).__name__}"
                )
            if adapter in getattr(module, "lora_variant", {}):
                raise SkillmixInputError(
                    f"{where}: LoRA variants (DoRA and others) are not supported by the gradient engine"
                )
            if not isinstance(lora_a, torch.nn.Linear) or not isinstance(lora_b, torch.nn.Linear):
                raise SkillmixInputError(f"{where}: lora_A / lora_B must be torch.nn.Linear")
            if lora_a.bias is not None or lora_b.bias is not None:
                raise SkillmixInputError(f"{where}: LoRA bias (lora_bias=True) is not supported")
            found.append(
                _Adapter(
                    module, adapter, f"{prefix}lora_A.{adapter}.weight", f"{prefix}lora_B.{adapter}.weight"
                )
            )
    return found


def lora_parameters(model: torch.nn.Module) -> list[ParamSlice]:
    """The trainable parameters of `model` in `named_parameters()` order, with flat offsets.

    Every trainable parameter must be the A or B weight of a peft LoRA Linear layer (no
    `modules_to_save`, no trainable base weights), else SkillmixInputError.
    """
    known = set()
    for ad in _lora_adapters(model):
        known.update((ad.a_name, ad.b_name))
    params: list[ParamSlice] = []
    offset = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name not in known:
            raise SkillmixInputError(
                f"trainable parameter {name!r} is not a LoRA A/B weight; per-example LoRA gradients "
                "need a peft model whose only trainable parameters are its LoRA adapters"
            )
        params.append(ParamSlice(name, tuple(p.shape), offset))
        offset += p.numel()
    if not params:
        raise SkillmixInputError("the model has no trainable LoRA parameters (is LoRA enabled?)")
    return params


def has_labels(labels: list[int]) -> bool:
    """True when the example has at least one supervised token (labels shift by one)."""
    return any(t != IGNORE for t in labels[1:])


def labelled_examples(data: EncodedSet) -> tuple[list[int], list[str]]:
    """(indices of the examples with label tokens, ids of the others), the others logged.

    An example whose answer was truncated away has no loss; it is excluded, never given NaN.
    """
    kept = [i for i in range(len(data)) if has_labels(data.labels[i])]
    kept_set = set(kept)
    excluded = [data.ids[i] for i in range(len(data)) if i not in kept_set]
    if excluded:
        log.warning(
            "%s: %d example(s) without label tokens (answer truncated away?) excluded from the gradients: %s",
            data.skill,
            len(excluded),
            ", ".join(excluded[:10]) + (" ..." if len(excluded) > 10 else ""),
        )
    return kept, excluded


class PerExampleGradients:
    """Batched per-example gradients of each example's mean label-token loss w.r.t. the LoRA weights.

    Puts the model in eval mode (LoRA dropout off). Returned tensors are float32 (float64 when
    the LoRA weights are float64). Use as a context manager or call `close()` to remove the hooks.
    """

    def __init__(self, model: torch.nn.Module, runtime: Runtime, pad_id: int):
        self.model = model
        self.runtime = runtime
        self.pad_id = pad_id
        self.params = lora_parameters(model)
        self.dim = sum(p.numel for p in self.params)
        model.eval()
        names = {p.name for p in self.params}
        self._adapters = [ad for ad in _lora_adapters(model) if ad.a_name in names or ad.b_name in names]
        self._recording = False
        # per adapter, one entry per call in the current forward: [X, H, U]
        self._calls: list[list[list[torch.Tensor]]] = [[] for _ in self._adapters]
        self._handles: list[Any] = []
        for i, ad in enumerate(self._adapters):
            lora_a = ad.module.lora_A[ad.adapter]
            lora_b = ad.module.lora_B[ad.adapter]
            self._handles.append(lora_a.register_forward_hook(self._a_hook(i)))
            self._handles.append(lora_b.register_forward_hook(self._b_hook(i)))

    def _a_hook(self, i: int):
        def hook(module, inputs, output):
            if self._recording:
                self._calls[i].append([inputs[0].detach(), output.detach()])

        return hook

    def _b_hook(self, i: int):
        def hook(module, inputs, output):
            if self._recording:
                calls = self._calls[i]
                if not calls or len(calls[-1]) != 2:
                    raise RuntimeError(f"lora_B of {self._adapters[i].b_name} ran without its lora_A")
                calls[-1].append(output)

        return hook

    def close(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> PerExampleGradients:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(
        self, input_ids: list[list[int]], labels: list[list[int]], ids: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-example gradients of one batch: parameter name -> [B, *shape].

        `ids` only name examples in error messages. Every example needs at least one label
        token (SkillmixInputError otherwise); a non-finite loss or gradient raises
        FloatingPointError naming the example.
        """
        if not self._handles:
            raise RuntimeError("PerExampleGradients is closed")
        n = len(input_ids)
        names = ids if ids is not None else [f"#{i} of the batch" for i in range(n)]
        if n == 0:
            raise SkillmixInputError("empty batch")
        for lab, name in zip(labels, names, strict=True):
            if not has_labels(lab):
                raise SkillmixInputError(f"example {name}: no label tokens, its loss is undefined")
        batch = collate(input_ids, labels, self.pad_id)
        batch = {k: v.to(self.runtime.device) for k, v in batch.items()}
        self.model.eval()
        for calls in self._calls:
            calls.clear()
        self._recording = True
        try:
            with torch.enable_grad():
                with self.runtime.autocast():
                    losses = example_mean_losses(self.model, batch)
        finally:
            self._recording = False
        try:
            bad = (~torch.isfinite(losses.detach())).nonzero().flatten().tolist()
            if bad:
                raise FloatingPointError(
                    f"non-finite loss for example {names[bad[0]]} ({len(bad)} of {n} in the batch)"
                )
            outputs = [call[2] for calls in self._calls for call in calls]
            if not outputs:
                raise RuntimeError("no LoRA layer ran in the forward pass (are the adapters disabled?)")
            grads_out = torch.autograd.grad(losses.sum(), outputs, allow_unused=True)
            return self._assemble(grads_out, n, names)
        finally:
            for calls in self._calls:
                calls.clear()

    def _assemble(self, grads_out, n: int, names: list[str]) -> dict[str, torch.Tensor]:
        result: dict[str, torch.Tensor] = {}
        weights = dict(self.model.named_parameters())
        k = 0
        for ad, calls in zip(self._adapters, self._calls, strict=True):
            b_weight = ad.module.lora_B[ad.adapter].weight
            dtype = torch.float64 if b_weight.dtype == torch.float64 else torch.float32
            g_a = torch.zeros((n, *weights[ad.a_name].shape), dtype=dtype, device=b_weight.device)
            g_b = torch.zeros((n, *b_weight.shape), dtype=dtype, device=b_weight.device)
            b_mat = b_weight.detach().to(dtype)
            for x, h, _ in calls:
                g = grads_out[k]
                k += 1
                if g is None:
                    continue
                g, h, x = g.to(dtype), h.to(dtype), x.to(dtype)
                g_b += torch.einsum("bto,btr->bor", g, h)
                g_a += torch.einsum("btr,bti->bri", g @ b_mat, x)
            result[ad.a_name], result[ad.b_name] = g_a, g_b
        out = {p.name: result[p.name] for p in self.params}
        for name, g in out.items():
            finite = torch.isfinite(g.reshape(n, -1)).all(dim=1)
            if not bool(finite.all()):
                first = int((~finite).nonzero()[0])
                raise FloatingPointError(f"non-finite gradient of {name} for example {names[first]}")
        return out

    def flat(
        self, input_ids: list[list[int]], labels: list[list[int]], ids: list[str] | None = None
    ) -> torch.Tensor:
        """Per-example gradients of one batch as [B, D], concatenated in `lora_parameters` order."""
        grads = self(input_ids, labels, ids)
        n = len(input_ids)
        return torch.cat([grads[p.name].reshape(n, -1) for p in self.params], dim=1)


def adam_moments(
    g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, beta1: float, beta2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """m' = β1·m + (1−β1)·g and v' = β2·v + (1−β2)·g² (no bias correction), float32 or wider."""
    dtype = torch.promote_types(g.dtype, torch.float32)
    g = g.to(dtype)
    m = beta1 * exp_avg.to(device=g.device, dtype=dtype) + (1 - beta1) * g
    v = beta2 * exp_avg_sq.to(device=g.device, dtype=dtype) + (1 - beta2) * g * g
    return m, v


def adam_direction(m: torch.Tensor, v: torch.Tensor, eps: float, variant: str = "less") -> torch.Tensor:
    """Γ from updated moments: "less" m'/sqrt(v' + ε) (ε inside the root), "adam" m'/(sqrt(v') + ε)."""
    if variant not in ADAM_VARIANTS:
        raise SkillmixInputError(f"Adam feature variant must be one of {ADAM_VARIANTS}, got {variant!r}")
    if variant == "less":
        return m / torch.sqrt(v + eps)
    return m / (torch.sqrt(v) + eps)


def optimizer_moments(
    optimizer_state: dict[str, Any], params: list[ParamSlice]
) -> tuple[torch.Tensor, torch.Tensor, float, float, float]:
    """Flat float32 [D] exp_avg and exp_avg_sq in `params` order, plus β1, β2, ε of the optimizer.

    `optimizer_state` is a torch Adam/AdamW `state_dict()`. Its param groups, flattened in order,
    must list exactly `params` in order (integer keys, as torch writes them); parameter-name keys
    (FSDP-style) are matched by name. Shapes are checked. A state without moments (no step taken)
    raises SkillmixInputError.
    """
    if not isinstance(optimizer_state, dict) or "param_groups" not in optimizer_state:
        raise SkillmixInputError("optimizer state: expected a torch optimizer state_dict() with param_groups")
    groups = optimizer_state["param_groups"]
    state = optimizer_state.get("state") or {}
    keys = [k for group in groups for k in group["params"]]
    if len(keys) != len(params):
        raise SkillmixInputError(
            f"optimizer state lists {len(keys)} parameters but the model has {len(params)} trainable "
            "LoRA parameters; was the optimizer built over exactly the trainable parameters?"
        )
    hyper = {(tuple(g["betas"]), float(g["eps"])) for g in groups if "betas" in g and "eps" in g}
    if len(hyper) != 1:
        raise SkillmixInputError(
            "optimizer state: param groups need one common (betas, eps) pair for the Adam feature, "
            f"found {sorted(hyper)}"
        )
    (beta1, beta2), eps = next(iter(hyper))
    if isinstance(keys[0], str):
        by_name = {p.name: p for p in params}
        missing = [k for k in keys if k not in by_name]
        if missing:
            raise SkillmixInputError(f"optimizer state names unknown parameters, e.g. {missing[0]!r}")
        pairs = [(k, by_name[k]) for k in keys]
        pairs.sort(key=lambda kp: kp[1].offset)
    else:
        pairs = list(zip(keys, params, strict=True))
    exp_avg, exp_avg_sq = [], []
    for key, p in pairs:
        entry = state.get(key)
        if not entry or "exp_avg" not in entry or "exp_avg_sq" not in entry:
            raise SkillmixInputError(
                f"optimizer state has no exp_avg/exp_avg_sq for {p.name} (key {key!r}); the Adam feature "
                "needs a checkpoint saved after at least one optimizer step"
            )
        for moment, out in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
            t = entry[moment]
            if tuple(t.shape) != p.shape:
                raise SkillmixInputError(
                    f"optimizer state {moment} for {p.name} (key {key!r}) has shape {tuple(t.shape)}, "
                    f"expected {p.shape}"
                )
            out.append(t.detach().reshape(-1).to(device="cpu", dtype=torch.float32))
    return torch.cat(exp_avg), torch.cat(exp_avg_sq), float(beta1), float(beta2), float(eps)
