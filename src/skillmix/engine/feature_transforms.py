"""Feature maps over per-parameter gradients: transforms T, the projection Π and Gram matrices.

A feature is φ(u) = Π(T(∇_θ u)) (docs/methods/entk.md#feature-engine). The gradients of the units u come from
`skillmix.engine.gradient_units`; this module turns them into features:

* transforms T (`Transform`): sgd (the gradient as it is), sign, or LESS's Adam direction from
  optimizer moments (`AdamState`).
* an optional projection Π (`Projection`): the portable Rademacher JL matrix to d dimensions,
  or a sparse JL sketch (count sketch, `kind` "sjlt"), applied per parameter slice after T, so
  the full gradient vector is never formed.
* `FeatureMap` turns one batch of per-parameter gradients into one feature matrix per transform,
  and `gram` computes ⟨φ(rows), φ(cols)⟩ block by block in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from skillmix.engine.lora_gradients import (
    ADAM_VARIANTS,
    ParamSlice,
    adam_direction,
    adam_moments,
    optimizer_moments,
)
from skillmix.engine.projection import RademacherProjector, SparseJLProjector, single_row_safe_matmul
from skillmix.infra.errors import SkillmixInputError

TRANSFORMS = ("sgd", "sign", "adam")
PROJECTION_KINDS = ("dense", "sjlt")  # the portable Rademacher matrix; a sparse JL sketch
DENSE_MATRIX_BYTES = 512 * 2**20  # materialise the projection matrix when it is at most this big

Gradients = Mapping[str, torch.Tensor]
"""Per-parameter gradients of R rows: parameter name -> [R, *parameter shape]."""

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
    """x ↦ x @ P[rows], the projection Π of every width asked for, `kind` "dense" or "sjlt".

    dense: the portable Rademacher matrix of the widest width (materialised once when small
    enough); a narrower width is its first columns (`columns`). sjlt: one sparse JL sketch per
    width (`SparseJLProjector`, `nonzeros` per input coordinate), their outputs side by side, so
    `dim` is the sum of the widths. Either way the d-wide feature is `out[:, columns(d)]`.
    """

    def __init__(
        self,
        input_dim: int,
        dim: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        kind: str = "dense",
        widths: Sequence[int] = (),
        nonzeros: int = 1,
    ) -> None:
        if kind not in PROJECTION_KINDS:
            raise SkillmixInputError(f"projection kind must be one of {PROJECTION_KINDS}, got {kind!r}")
        self.kind = kind
        self.widths = sorted({int(dim), *(int(w) for w in widths)})
        self.dense: torch.Tensor | None = None
        self._columns: dict[int, slice] = {}
        if kind == "sjlt":
            self.sketches = [SparseJLProjector(input_dim, w, seed, nonzeros) for w in self.widths]
            start = 0
            for w in self.widths:
                self._columns[w] = slice(start, start + w)
                start += w
            self.dim = start
            return
        self.projector = RademacherProjector(input_dim, self.widths[-1], seed=seed)
        self.dim = self.widths[-1]
        self._columns = {w: slice(0, w) for w in self.widths}
        if input_dim * self.dim * 4 <= DENSE_MATRIX_BYTES:
            p = self.projector
            self.dense = torch.cat([p.block(i, device=device) for i in range(p.n_blocks)], dim=1)

    @property
    def identity(self) -> dict[str, Any]:
        """What names the matrix (seed, shape, kind), for the outputs' metadata."""
        if self.kind == "dense":
            return self.projector.identity
        first = self.sketches[0].identity
        return {**first, "output_dim": None, "widths": list(self.widths)}

    def columns(self, width: int) -> slice:
        """The columns of the output that hold the `width`-wide projection."""
        if width not in self._columns:
            raise SkillmixInputError(f"projection width {width} not among {self.widths}")
        return self._columns[width]

    def __call__(self, x: torch.Tensor, row_offset: int) -> torch.Tensor:
        """x [R, k] over input coordinates row_offset..row_offset+k ↦ [R, dim], float32 accumulation."""
        if self.kind == "sjlt":
            outs = [s.project(x, row_offset) for s in self.sketches]
            return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
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
