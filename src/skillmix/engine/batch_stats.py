"""A training step's per-skill statistics for a sampler, and the per-skill weighted step loss.

Samplers that declare `needs_batch_losses` see, before every backward pass, the
:class:`~skillmix.engine.sampling.BatchStats` of the step's whole batch (every micro-batch of
every process), and may return per-skill loss weights α. The weighted step loss is

    loss = Σ_{j present} α_j · (1 / |T_j|) Σ_{x ∈ T_j} ℓ_x

(T_j: the label tokens of skill j in the step's batch): each skill's mean label-token loss,
weighted by α; skills absent from the batch contribute nothing and the weights are not
renormalised. This is DoReMi's objective as its paper writes it (Xie et al., 2023, "DoReMi:
Optimizing Data Mixtures Speeds Up Language Model Pretraining", arXiv 2305.10429, §2, Algorithm 1). The
weighted token mean of DoReMi's released code, Σ_x w_{j(x)} ℓ_x / Σ_x w_{j(x)}, is the same loss
with α_j = w_j |T_j| / Σ_i w_i |T_i|, which a sampler computes from the step's token counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from skillmix.engine.encoding import EncodedSet
from skillmix.engine.sampling import BatchStats
from skillmix.infra import processes


def sum_over_processes(values: np.ndarray, device: torch.device) -> np.ndarray:
    """The element-wise sum of a float array over all processes (the array itself with one process).

    `device` is where this process's collectives run (its GPU under NCCL, the CPU under gloo)."""
    if processes.world_size() == 1:
        return values
    import torch.distributed as dist

    summed = torch.as_tensor(values, dtype=torch.float64).to(device)
    dist.all_reduce(summed)
    return summed.cpu().numpy()


def example_loss_sums(losses: torch.Tensor) -> np.ndarray:
    """Each example's summed label-token loss, float64, from per-position losses [B, P] that are
    zero off the label positions (as :func:`skillmix.engine.encoding.target_losses` gives them)."""
    return losses.detach().sum(1).to(torch.float64).cpu().numpy()


def batch_stats(
    step: int,
    pairs: Sequence[tuple[int, int]],
    sets: Sequence[EncodedSet],
    n_skills: int,
    mine: tuple[int, np.ndarray],
    reference: np.ndarray | None,
    device: torch.device,
) -> BatchStats:
    """The :class:`BatchStats` of step `step`'s whole batch `pairs` (skill index, example index).

    `mine` is (offset in `pairs`, summed losses of this process's examples from that offset on);
    `reference` per example of the same share, the reference model's summed loss and the summed
    per-token excess max(ℓ_x − ℓ^ref_x, 0) ([examples, 2]), or None. Every process
    passes its own share; all get the same statistics. Token counts are the examples' label counts.
    """
    offset, local = mine
    columns = 1 if reference is None else 3
    whole = np.zeros((len(pairs), columns))
    whole[offset : offset + len(local), 0] = local
    if reference is not None:
        whole[offset : offset + len(local), 1:] = reference
    whole = sum_over_processes(whole, device)
    skills = np.fromiter((s for s, _ in pairs), dtype=np.int64, count=len(pairs))
    tokens = np.fromiter((sets[s].label_counts[i] for s, i in pairs), dtype=np.int64, count=len(pairs))
    return BatchStats(
        step=step,
        loss_sum=np.bincount(skills, weights=whole[:, 0], minlength=n_skills),
        tokens=np.bincount(skills, weights=tokens, minlength=n_skills).astype(np.int64),
        examples=np.bincount(skills, minlength=n_skills).astype(np.int64),
        reference_loss_sum=None
        if reference is None
        else np.bincount(skills, weights=whole[:, 1], minlength=n_skills),
        excess_loss_sum=None
        if reference is None
        else np.bincount(skills, weights=whole[:, 2], minlength=n_skills),
        example_losses=[
            (int(s), float(loss), int(n)) for s, loss, n in zip(skills, whole[:, 0], tokens, strict=True)
        ],
    )


def token_coefficients(weights: np.ndarray | Sequence[float], stats: BatchStats) -> np.ndarray:
    """Per skill, the factor α_j / |T_j| of each of its label-token losses in the weighted step loss
    (0 for a skill without label tokens in the batch); `weights` are the sampler's α."""
    alpha = np.asarray(weights, dtype=np.float64)
    n_skills = len(stats.tokens)
    if alpha.shape != (n_skills,) or not np.all(np.isfinite(alpha)) or np.any(alpha < 0):
        raise ValueError(
            f"loss weights of step {stats.step} must be {n_skills} finite non-negative numbers, got {alpha}"
        )
    present = stats.tokens > 0
    return np.divide(alpha, stats.tokens, out=np.zeros(n_skills), where=present)
