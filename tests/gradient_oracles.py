"""Reference computations the tests compare the gradient engine against (not used by the workflow)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from skillmix.engine.encoding import EncodedSet
from skillmix.engine.feature_transforms import FeatureMap, Transform
from skillmix.engine.gradient_units import example_loss_gradients, param_slices, select_parameters
from skillmix.engine.lora_gradients import labelled_examples
from skillmix.engine.modeling import Runtime
from skillmix.infra.errors import SkillmixInputError
from skillmix.kernel.kernels import (
    FORMULA_TRANSFORMS,
    FORMULAS,
    LabelWords,
    kernel_from_features,
    label_logits,
    lm_label_features,
)


def per_logit_jacobians(
    model: torch.nn.Module,
    outputs: Callable[[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    subset: str = "all",
    batch_size: int = 16,
) -> torch.Tensor:
    """Flat per-example, per-logit Jacobians [N, C, P] of the selected parameters.

    `outputs(model, params, x)` returns the C logits of ONE example x (a row of `inputs`) with
    the selected parameters replaced by `params` (use `torch.func.functional_call`). Computed
    with `torch.func.jacrev` under `vmap`, `batch_size` examples at a time; parameters are
    flattened in `named_parameters()` order. The model is put in eval mode.
    """
    from torch.func import jacrev, vmap

    model.eval()
    params = {n: p.detach() for n, p in select_parameters(model.named_parameters(), subset).items()}

    def f(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return outputs(model, p, x)

    jac = vmap(jacrev(f), in_dims=(None, 0))
    fmap = FeatureMap(param_slices(params), [Transform()], dtype=next(iter(params.values())).dtype)
    rows = []
    for start in range(0, len(inputs), batch_size):
        j = jac(params, inputs[start : start + batch_size])
        n, c = next(iter(j.values())).shape[:2]
        rows.append(fmap({k: v.reshape(n * c, *v.shape[2:]) for k, v in j.items()})[0].reshape(n, c, -1))
    return torch.cat(rows)


def example_gradients(
    model: torch.nn.Module,
    data: EncodedSet,
    runtime: Runtime,
    pad_id: int,
    batch_size: int = 16,
    subset: str = "lora",
) -> tuple[torch.Tensor, list[str], list[str]]:
    """Flat per-example loss gradients of an encoded set: ([N_kept, D], kept ids, excluded ids).

    Examples without label tokens (answer truncated away) are excluded and reported (returned
    and logged), never given a NaN row. Rows come back in the data's order; float32, or
    float64 when the parameters are float64.
    """
    kept, excluded = labelled_examples(data)
    layout, batches = example_loss_gradients(model, runtime, pad_id, data, kept, subset, batch_size)
    dtype = (
        torch.float64
        if next(p for p in model.parameters() if p.requires_grad).dtype == torch.float64
        else torch.float32
    )
    fmap = FeatureMap(layout, [Transform()], dtype=dtype)
    out = torch.empty((len(kept), fmap.dim), dtype=dtype)
    for pos, grads in batches:
        out[pos] = fmap(grads)[0].cpu()
    return out, [data.ids[i] for i in kept], excluded


def kernel(
    train: torch.Tensor, other: torch.Tensor, formula: str = "sgd", row_block: int = 256, col_block: int = 256
) -> torch.Tensor:
    """The kernel of one formula between training Jacobians [N, C, P] and X's [M, C, P]."""
    if formula not in FORMULAS:
        raise SkillmixInputError(f"kernel formula must be one of {FORMULAS}, got {formula!r}")
    names = FORMULA_TRANSFORMS[formula]
    feats = [{t: Transform(t)(x) for t in names} for x in (train, other)]
    return kernel_from_features(feats[0], feats[1], formula, row_block, col_block)


def lm_label_logits(model: torch.nn.Module, ids: Sequence[list[int]], lw: LabelWords) -> torch.Tensor:
    """f0: the label-word logits [N, C] of every prompt (float64, eval mode, no gradient)."""
    model.eval()
    with torch.no_grad():
        return torch.stack([label_logits(model, x, lw.ids).double().cpu() for x in ids])


def lm_jacobians(
    model: torch.nn.Module, ids: Sequence[list[int]], lw: LabelWords, subset: str = "all"
) -> torch.Tensor:
    """Per-example, per-label-word Jacobians [N, C, P] of a causal LM (float64 on the CPU;
    parameters in `named_parameters()` order, a tied weight once with the sum of both uses'
    gradients)."""
    return lm_label_features(model, ids, lw, subset)[0]["sgd"]
