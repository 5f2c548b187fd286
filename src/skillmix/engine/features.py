"""One gradient-feature engine for LESS, the eNTK kernels and the gradient skills graph (entk.md §8).

A feature is φ(u) = Π(T(∇_θ u)) for a unit u, over a parameter subset S:

* units: an example's loss (`example_loss_gradients`), an (example, logit) pair
  (`logit_gradients`), or the mean loss of a whole set such as one skill
  (`mean_loss_gradient`). Each yields per-parameter gradient tensors with leading row axes.
* transforms T (`Transform`): sgd (the gradient as it is), sign, or LESS's Adam direction from
  optimizer moments.
* an optional projection Π (`Projection`): the portable Rademacher JL matrix to d dimensions,
  applied per parameter slice after T, so the full gradient vector is never formed.
* `FeatureMap` turns one batch of per-parameter gradients into one feature matrix per transform,
  and `gram` computes ⟨φ(rows), φ(cols)⟩ block by block in float64.

The LESS datastore (`skillmix.less.datastore`), the kernels (`skillmix.kernel.task`) and the gradient
skills graph (`skillmix.graph.gradient`) all go through these functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from skillmix.engine.encoding import IGNORE, EncodedSet, collate, per_example_loss, token_losses
from skillmix.engine.gradients import (
    ADAM_VARIANTS,
    ParamSlice,
    PerExampleGradients,
    adam_direction,
    adam_moments,
    labelled_examples,
    optimizer_moments,
)
from skillmix.engine.modeling import Runtime
from skillmix.engine.projection import RademacherProjector, single_row_safe_matmul
from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)

TRANSFORMS = ("sgd", "sign", "adam")
DENSE_MATRIX_BYTES = 512 * 2**20  # materialise the projection matrix when it is at most this big

Gradients = Mapping[str, torch.Tensor]
"""Per-parameter gradients of R rows: parameter name -> [R, *parameter shape]."""


# Parameter subsets


def select_parameters(
    named: Mapping[str, torch.Tensor] | Sequence[tuple[str, torch.Tensor]], subset: str = "all"
) -> dict[str, torch.Tensor]:
    """The parameters a feature differentiates: `all`, `no_embeddings` (names without "embed"),
    `no_head` (without "head"), `bias` (names ending in "bias"), `lora` (names with "lora_"), or
    a comma-separated list of name substrings. Only parameters that require grad count."""
    items = list(named.items()) if isinstance(named, Mapping) else list(named)
    items = [(n, p) for n, p in items if p.requires_grad]
    rules: dict[str, Callable[[str], bool]] = {
        "all": lambda n: True,
        "no_embeddings": lambda n: "embed" not in n,
        "no_head": lambda n: "head" not in n,
        "bias": lambda n: n.endswith("bias"),
        "lora": lambda n: "lora_" in n,
    }
    if subset in rules:
        keep = rules[subset]
    else:
        parts = [s.strip() for s in subset.split(",") if s.strip()]
        if not parts:
            raise SkillmixInputError(f"parameter subset {subset!r} names nothing")

        def keep(n: str) -> bool:
            return any(s in n for s in parts)

    chosen = {n: p for n, p in items if keep(n)}
    if not chosen:
        raise SkillmixInputError(f"parameter subset {subset!r} selects no trainable parameter")
    return chosen


def param_slices(params: Mapping[str, torch.Tensor]) -> list[ParamSlice]:
    """The flat feature layout of `params` (in their order): name, shape, offset."""
    out, offset = [], 0
    for name, p in params.items():
        out.append(ParamSlice(name, tuple(p.shape), offset))
        offset += p.numel()
    return out


def uses_lora_engine(model: torch.nn.Module, subset: str) -> bool:
    """True when `subset` of `model` is exactly its trainable peft LoRA weights (the batched engine)."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    return subset in ("lora", "all") and bool(trainable) and all("lora_" in n for n in trainable)


# Transforms and projection


@dataclass
class AdamState:
    """Flat optimizer moments over the feature's parameters, and the Adam hyper-parameters."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    beta1: float
    beta2: float
    eps: float
    variant: str = "less"

    @classmethod
    def from_optimizer(
        cls, optimizer_state: dict[str, Any], params: list[ParamSlice], variant: str = "less"
    ) -> AdamState:
        """From a torch Adam/AdamW `state_dict()` over exactly `params` (checked, see optimizer_moments)."""
        if variant not in ADAM_VARIANTS:
            raise SkillmixInputError(f"Adam feature variant must be one of {ADAM_VARIANTS}, got {variant!r}")
        m, v, beta1, beta2, eps = optimizer_moments(optimizer_state, params)
        return cls(m, v, beta1, beta2, eps, variant)

    def to(self, device: torch.device) -> AdamState:
        """The same state with its moments on `device`."""
        return AdamState(
            self.exp_avg.to(device),
            self.exp_avg_sq.to(device),
            self.beta1,
            self.beta2,
            self.eps,
            self.variant,
        )


class Transform:
    """A feature transform T, applied to one parameter's slice of gradient rows at a time.

    `sgd` (the gradient as it is, an SGD step's direction); `sign` (sign(0) = 0); `adam`: Γ from
    the moments updated with the row's own gradient (m' = β1·m + (1−β1)·g, v' = β2·v + (1−β2)·g²,
    no bias correction), with LESS's
    ε inside the root (variant "less") or torch Adam's placement ("adam"). `large_v` counts
    the coordinates with v' > 1e-9 seen so far (the share of sign-like coordinates).
    """

    def __init__(self, kind: str = "sgd", adam: AdamState | None = None) -> None:
        if kind not in TRANSFORMS:
            raise SkillmixInputError(f"feature transform must be one of {TRANSFORMS}, got {kind!r}")
        if kind == "adam" and adam is None:
            raise SkillmixInputError("the Adam feature transform needs the checkpoint's optimizer moments")
        self.kind = kind
        self.adam = adam
        self.large_v = 0

    def __call__(self, g: torch.Tensor, param: ParamSlice | None = None) -> torch.Tensor:
        """T(g) for rows g [R, n] of one parameter (`param` locates its moments for adam)."""
        if self.kind == "sgd":
            return g
        if self.kind == "sign":
            return torch.sign(g)
        if param is None:
            raise ValueError("the Adam transform needs the parameter slice of the gradient")
        a = self.adam
        sl = slice(param.offset, param.offset + param.numel)
        m, v = adam_moments(g, a.exp_avg[sl], a.exp_avg_sq[sl], a.beta1, a.beta2)
        self.large_v += int((v > 1e-9).sum())
        return adam_direction(m, v, a.eps, a.variant)


class Projection:
    """x ↦ x @ P[rows] for the portable Rademacher matrix, materialised once when small enough."""

    def __init__(self, input_dim: int, dim: int, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.projector = RademacherProjector(input_dim, dim, seed=seed)
        self.dim = dim
        self.dense: torch.Tensor | None = None
        if input_dim * dim * 4 <= DENSE_MATRIX_BYTES:
            p = self.projector
            self.dense = torch.cat([p.block(i, device=device) for i in range(p.n_blocks)], dim=1)

    @property
    def identity(self) -> dict[str, Any]:
        """What names the matrix (seed, shape, kind), for the outputs' metadata."""
        return self.projector.identity

    def __call__(self, x: torch.Tensor, row_offset: int) -> torch.Tensor:
        """x [R, k] over input coordinates row_offset..row_offset+k ↦ [R, dim], float32 accumulation."""
        if self.dense is None:
            return self.projector.project(x, row_offset)
        block = self.dense[row_offset : row_offset + x.shape[1]]
        return single_row_safe_matmul(x.to(torch.float32), block.to(x.device))


class FeatureMap:
    """Per-parameter gradients of R rows → one feature matrix [R, d] per transform.

    Each parameter's slice is transformed, then (optionally) rounded to float16 and projected
    with the matching rows of the projection, and the slices are summed; without a projection
    the transformed slices are concatenated (d = the number of parameters) in `dtype`.
    """

    def __init__(
        self,
        params: list[ParamSlice],
        transforms: Sequence[Transform],
        projection: Projection | None = None,
        projection_input: str = "float32",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if projection_input not in ("float32", "float16"):
            raise SkillmixInputError(f"projection_input must be float32 or float16, got {projection_input!r}")
        if not transforms:
            raise ValueError("FeatureMap needs at least one transform")
        self.params = params
        self.transforms = list(transforms)
        self.projection = projection
        self.projection_input = projection_input
        self.dtype = dtype
        self.input_dim = sum(p.numel for p in params)

    @property
    def dim(self) -> int:
        """The width of a feature row."""
        return self.projection.dim if self.projection is not None else self.input_dim

    def __call__(self, grads: Gradients) -> list[torch.Tensor]:
        """One [R, dim] matrix per transform, in the order of `transforms`."""
        first = grads[self.params[0].name]
        n = first.shape[0]
        if self.projection is None:
            pieces: list[list[torch.Tensor]] = [[] for _ in self.transforms]
            for p in self.params:
                g = grads[p.name].reshape(n, -1).to(self.dtype)
                for out, t in zip(pieces, self.transforms, strict=True):
                    out.append(t(g, p).to(self.dtype))
            return [torch.cat(out, dim=1) for out in pieces]
        acc = [torch.zeros((n, self.dim), dtype=torch.float32, device=first.device) for _ in self.transforms]
        for p in self.params:
            g = grads[p.name].reshape(n, -1)
            for out, t in zip(acc, self.transforms, strict=True):
                out += _project_slice(t(g, p), p, self.projection, self.projection_input)
        return acc


def _project_slice(
    x: torch.Tensor, param: ParamSlice, projection: Projection, projection_input: str
) -> torch.Tensor:
    """One parameter's transformed rows x [R, numel] projected with its rows of the matrix."""
    if projection_input == "float16":
        x = x.to(torch.float16)
    return projection(x, param.offset)


def project_slices(
    features: torch.Tensor,
    params: list[ParamSlice],
    projection: Projection,
    projection_input: str = "float32",
) -> torch.Tensor:
    """Unprojected feature rows [R, Σ numel] (parameters concatenated in `params` order) ↦ [R, d],
    projected slice by slice exactly as a projecting FeatureMap does."""
    out = torch.zeros((features.shape[0], projection.dim), dtype=torch.float32, device=features.device)
    for p in params:
        out += _project_slice(features[:, p.offset : p.offset + p.numel], p, projection, projection_input)
    return out


# Gradient sources (units)


def _loss_gradient(
    model: torch.nn.Module,
    runtime: Runtime,
    pad_id: int,
    data: EncodedSet,
    idx: Sequence[int],
    params: Mapping[str, torch.Tensor],
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    what: str,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """(gradients w.r.t. `params`, loss) of `loss_of(logits, labels)` on examples `idx` of `data`,
    one padded batch; a non-finite loss raises FloatingPointError naming `what`."""
    batch = collate([data.input_ids[i] for i in idx], [data.labels[i] for i in idx], pad_id)
    batch = {k: v.to(runtime.device) for k, v in batch.items()}
    with torch.enable_grad(), runtime.autocast():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = loss_of(logits, batch["labels"])
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss for {what}")
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True, materialize_grads=True)
    return grads, loss.detach()


def example_loss_gradients(
    model: torch.nn.Module,
    runtime: Runtime,
    pad_id: int,
    data: EncodedSet,
    rows: Sequence[int],
    subset: str = "lora",
    batch_size: int = 16,
) -> tuple[list[ParamSlice], Iterator[tuple[list[int], Gradients]]]:
    """Per-example gradients of each example's mean label-token loss: (layout, batches).

    Each batch is (positions in `rows`, gradients [B, *shape]); every example in `rows` must
    have label tokens. A peft model whose trainable weights are its LoRA adapters uses the
    batched LoRA engine (`skillmix.engine.gradients`), grouping examples of similar length; any other
    subset takes one backward pass per example. The model is put in eval mode.
    """
    if batch_size < 1:
        raise SkillmixInputError(f"batch_size must be >= 1, got {batch_size}")
    rows = list(rows)
    if uses_lora_engine(model, subset):
        engine = PerExampleGradients(model, runtime, pad_id)

        def lora_batches() -> Iterator[tuple[list[int], Gradients]]:
            try:
                order = sorted(range(len(rows)), key=lambda j: len(data.input_ids[rows[j]]))
                for start in range(0, len(order), batch_size):
                    pos = order[start : start + batch_size]
                    idx = [rows[j] for j in pos]
                    yield (
                        pos,
                        engine(
                            [data.input_ids[i] for i in idx],
                            [data.labels[i] for i in idx],
                            [data.ids[i] for i in idx],
                        ),
                    )
            finally:
                engine.close()

        return engine.params, lora_batches()

    model.eval()
    params = select_parameters(model.named_parameters(), subset)
    layout = param_slices(params)

    def loop_batches() -> Iterator[tuple[list[int], Gradients]]:
        for j, i in enumerate(rows):
            grads, _ = _loss_gradient(
                model,
                runtime,
                pad_id,
                data,
                [i],
                params,
                lambda logits, labels: per_example_loss(logits, labels)[0],
                f"example {data.ids[i]}",
            )
            yield [j], {name: g.detach()[None] for name, g in zip(params, grads, strict=True)}

    return layout, loop_batches()


def mean_loss_gradient(
    model: torch.nn.Module,
    runtime: Runtime,
    pad_id: int,
    data: EncodedSet,
    subset: str = "all",
    reduction: str = "tokens",
    limit: int | None = None,
    batch_size: int = 32,
) -> tuple[list[ParamSlice], Gradients, float]:
    """The gradient of one set's mean loss (e.g. a skill), as one row: (layout, [1, *shape], loss).

    `reduction` "tokens": the mean over all label tokens, as a training batch of these
    examples would take it; "examples": the mean of each example's mean token loss, as the
    evaluation reports it. The first `limit` labelled examples are used (all when None), in
    batches of `batch_size` whose gradients are summed exactly. Model in eval mode.
    """
    if reduction not in ("tokens", "examples"):
        raise SkillmixInputError(f"mean-loss reduction must be tokens or examples, got {reduction!r}")
    kept, _ = labelled_examples(data)
    kept = kept[:limit] if limit is not None else kept
    if not kept:
        raise SkillmixInputError(f"{data.skill}: no example with label tokens for the mean-loss gradient")
    model.eval()
    params = select_parameters(model.named_parameters(), subset)
    tokens = sum(sum(t != IGNORE for t in data.labels[i][1:]) for i in kept)
    total = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items()}

    def loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if reduction == "tokens":
            return token_losses(logits, labels)[0].sum() / tokens
        return per_example_loss(logits, labels).sum() / len(kept)

    loss_sum = 0.0
    for start in range(0, len(kept), batch_size):
        idx = kept[start : start + batch_size]
        grads, part = _loss_gradient(
            model,
            runtime,
            pad_id,
            data,
            idx,
            params,
            loss_of,
            f"{data.skill}, the batch from example {start}",
        )
        for name, g in zip(params, grads, strict=True):
            total[name] += g.detach().to(torch.float64)
        loss_sum += float(part)
    return param_slices(params), {n: g[None] for n, g in total.items()}, loss_sum


def logit_gradients(
    model: torch.nn.Module,
    prompts: Sequence[list[int]],
    logits_of: Callable[[torch.nn.Module, list[int]], torch.Tensor],
    subset: str = "all",
) -> tuple[list[ParamSlice], Iterator[tuple[int, Gradients, torch.Tensor]]]:
    """Per-(example, logit) gradients of a model's C outputs on each prompt: (layout, items).

    Each item is (example index, gradients [C, *shape], the C logits (float64, CPU)). One
    forward pass per prompt (no padding) and one backward pass per output; a tied weight gets
    the sum of both uses' gradients. The model is put in eval mode.
    """
    model.eval()
    params = select_parameters(model.named_parameters(), subset)
    plist = list(params.values())

    def items() -> Iterator[tuple[int, Gradients, torch.Tensor]]:
        for n, x in enumerate(prompts):
            f = logits_of(model, x)
            per_param: list[list[torch.Tensor]] = [[] for _ in plist]
            for c in range(f.shape[0]):
                grads = torch.autograd.grad(f[c], plist, retain_graph=c + 1 < f.shape[0], allow_unused=True)
                for out, g, p in zip(per_param, grads, plist, strict=True):
                    out.append(g.detach() if g is not None else torch.zeros_like(p))
            yield (
                n,
                {name: torch.stack(gs) for name, gs in zip(params, per_param, strict=True)},
                f.detach().double().cpu(),
            )

    return param_slices(params), items()


# Gram matrices


def gram(rows: torch.Tensor, cols: torch.Tensor, row_block: int = 256, col_block: int = 256) -> torch.Tensor:
    """G = ⟨rows, cols⟩ in float64, computed block by block.

    rows [N, P] and cols [M, P] give [N, M]; per-logit features [N, C, P] and [M, C', P] give
    [N, C, M, C']. Blocks of row_block × col_block examples are multiplied in float64 and
    written into a preallocated result, so any block sizes give the same values.
    """
    per_logit = rows.ndim == 3
    if rows.ndim != cols.ndim or rows.ndim not in (2, 3) or rows.shape[-1] != cols.shape[-1]:
        raise SkillmixInputError(
            "gram: need [N, P] and [M, P] (or [N, C, P] and [M, C', P]) with the same P, "
            f"got {tuple(rows.shape)} and {tuple(cols.shape)}"
        )
    if row_block < 1 or col_block < 1:
        raise SkillmixInputError("gram: block sizes must be >= 1")
    r = rows if per_logit else rows[:, None]
    k = cols if per_logit else cols[:, None]
    n, c, p = r.shape
    m, c2, _ = k.shape
    out = torch.empty((n, c, m, c2), dtype=torch.float64)
    for i in range(0, n, row_block):
        a = r[i : i + row_block].to(torch.float64).reshape(-1, p)
        for j in range(0, m, col_block):
            b = k[j : j + col_block].to(torch.float64).reshape(-1, p)
            block = (a @ b.T).reshape(-1, c, min(col_block, m - j), c2)
            out[i : i + row_block, :, j : j + col_block, :] = block.cpu()
    return out if per_logit else out[:, 0, :, 0]
