"""Pooled final hidden states of encoded examples: one vector per example, for representation-based
selection (RDS+, Ivison et al. 2025, "Large-Scale Data Selection for Instruction Tuning"; see
docs/methods/less.md#rds-representations).

:func:`pooled_states` runs the model's decoder (no LM head) over right-padded batches of token ids
and pools the last layer's output (the states the LM head reads, after the final norm) over each
example's own tokens with :func:`pool`: ``weighted_mean`` (RDS+: token t of L weighs t/(1+…+L),
later tokens more), ``mean`` (every token alike) or ``last`` (the last token). Padding never
counts, so an example pools to the same vector in any batch (up to float rounding).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from skillmix.engine.encoding import collate
from skillmix.engine.modeling import Runtime
from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)

POOLINGS = ("weighted_mean", "mean", "last")
"""The poolings :func:`pool` knows; ``weighted_mean`` is RDS+'s."""


def token_weights(mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Each token's weight in its example's pooled state ([B, T], rows summing to 1; 0 on padding).

    `mask` is the attention mask (1 on the example's tokens). ``weighted_mean`` weighs the k-th
    token of an example (k = 1, 2, …, counted over its own tokens) by k; ``mean`` weighs them
    alike; ``last`` puts all weight on the last one.
    """
    if pooling not in POOLINGS:
        raise SkillmixInputError(f"select.rds.pooling must be one of {POOLINGS}, got {pooling!r}")
    mask = mask.to(torch.float64)
    if bool((mask.sum(dim=1) == 0).any()):
        raise SkillmixInputError("an example has no tokens to pool")
    position = torch.cumsum(mask, dim=1) * mask  # 1..L on the example's tokens, 0 on padding
    if pooling == "weighted_mean":
        weights = position
    elif pooling == "mean":
        weights = mask
    else:
        weights = (position == position.max(dim=1, keepdim=True).values).to(torch.float64) * mask
    return weights / weights.sum(dim=1, keepdim=True)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pooled states [B, H] (float32) of hidden states [B, T, H] under the attention mask [B, T]."""
    weights = token_weights(mask, pooling).to(device=hidden.device, dtype=torch.float32)
    return torch.einsum("bt,bth->bh", weights, hidden.to(torch.float32))


def decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The model without its LM head: the module whose output ``last_hidden_state`` the head reads."""
    inner = getattr(model, "base_model", model)
    if inner is model:
        raise SkillmixInputError(f"{type(model).__name__}: no decoder found below the LM head")
    return inner


@torch.no_grad()
def pooled_states(
    model: torch.nn.Module,
    runtime: Runtime,
    pad_id: int,
    input_ids: Sequence[Sequence[int]],
    *,
    batch_size: int,
    pooling: str,
) -> np.ndarray:
    """The pooled final hidden state of every example ([N, H] float32, in the order given).

    Examples are batched by length (longest first, so a batch pads little) and put back in order.
    """
    if not input_ids:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    if batch_size < 1:
        raise SkillmixInputError(f"select.rds.batch_size must be >= 1, got {batch_size}")
    body = decoder(model)
    model.eval()
    order = sorted(range(len(input_ids)), key=lambda i: (-len(input_ids[i]), i))
    out: np.ndarray | None = None
    n_batches = -(-len(order) // batch_size)
    for b, start in enumerate(range(0, len(order), batch_size)):
        rows = order[start : start + batch_size]
        ids = [list(input_ids[i]) for i in rows]
        batch = collate(ids, ids, pad_id)
        mask = batch["attention_mask"].to(runtime.device)
        with runtime.autocast():
            hidden = body(input_ids=batch["input_ids"].to(runtime.device), attention_mask=mask)
        pooled = pool(hidden.last_hidden_state, mask, pooling).cpu().numpy()
        if out is None:
            out = np.empty((len(input_ids), pooled.shape[1]), dtype=np.float32)
        out[rows] = pooled
        if (b + 1) % max(1, n_batches // 10) == 0 or b + 1 == n_batches:
            log.info("hidden states: batch %d of %d", b + 1, n_batches)
    assert out is not None
    return out
