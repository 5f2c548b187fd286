"""The forward and backward passes of one optimiser step, and the step's loss.

A step's batch is split over the job's processes and, within a process, over micro-batches
(gradient accumulation). The plain loss is the mean over the label tokens of the whole step's
batch, whichever process and micro-batch a token falls in; DDP averages the processes' gradients,
so a step's update is the same on one process and on several (within float rounding).

For a sampler with `needs_batch_losses`, the step's :class:`~skillmix.engine.sampling.BatchStats`
are complete before any backward pass: with one micro-batch per process they come from the
forward pass whose gradient the step applies; with several, from a forward pass without
gradients over the step's batch first. The sampler then sees them (`observe_batch`) and may weigh
the step's loss per skill (`loss_weights`, see :mod:`skillmix.engine.batch_stats`). With
`needs_reference`, a reference model (eval mode, no gradients) runs on the same collated batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from skillmix.engine.batch_stats import batch_stats, example_loss_sums, token_coefficients
from skillmix.engine.distributed import reshard, set_gradient_sync
from skillmix.engine.encoding import EncodedSet, collate, label_token_losses
from skillmix.engine.modeling import Runtime
from skillmix.engine.sampling import SkillSampler
from skillmix.infra import processes

Pairs = Sequence[tuple[int, int]]


class StepPasses:
    """Runs the passes of each optimiser step for one process, leaving the step's gradients in the
    model; `per_process` examples of each step are this process's, `micro` per forward pass."""

    def __init__(
        self,
        net: torch.nn.Module,
        runtime: Runtime,
        pad_id: int,
        sampler: SkillSampler,
        split: tuple[int, int],
        reference: torch.nn.Module | None = None,
    ) -> None:
        self.net = net
        self.runtime = runtime
        self.pad_id = pad_id
        self.sampler = sampler
        self.per_process, self.micro = split
        self.reference = reference if sampler.needs_reference else None
        self.n_proc, self.proc = processes.world_size(), processes.rank()

    def run(self, step: int, pairs: Pairs, sets: Sequence[EncodedSet]) -> tuple[float, int]:
        """Forward and backward passes of step `step` over its whole batch `pairs`; returns the step's
        loss (the same in every process) and its label-token count."""
        n_tokens = sum(sets[s].label_counts[i] for s, i in pairs)
        first = self.proc * self.per_process
        mine = pairs[first : first + self.per_process]
        chunks = [mine[k : k + self.micro] for k in range(0, self.per_process, self.micro)]
        if not self.sampler.needs_batch_losses:
            return self._plain(chunks, sets, n_tokens), n_tokens
        if len(chunks) == 1:
            return self._observed_one_pass(step, pairs, chunks[0], sets, n_tokens), n_tokens
        return self._observed_accumulated(step, pairs, chunks, sets, n_tokens), n_tokens

    def _plain(self, chunks: list[Pairs], sets: Sequence[EncodedSet], n_tokens: int) -> float:
        """The plain step: the mean over the batch's label tokens."""
        denominator = max(n_tokens, 1)
        local_sum = 0.0
        for k, chunk in enumerate(chunks):
            batch = self._collate(chunk, sets)
            self._sync(k == len(chunks) - 1)
            with self.runtime.autocast():
                losses, _ = label_token_losses(self.net, batch)
            part = losses.sum()
            (part / denominator * self.n_proc).backward()
            local_sum += part.item()
        return processes.sum_over_processes(local_sum) / denominator

    def _observed_one_pass(
        self, step: int, pairs: Pairs, chunk: Pairs, sets: Sequence[EncodedSet], n_tokens: int
    ) -> float:
        """A step of one micro-batch per process: its statistics from the pass it backpropagates."""
        batch = self._collate(chunk, sets)
        self._sync(True)
        with self.runtime.autocast():
            losses, _ = label_token_losses(self.net, batch)
        reference = self._reference_sums(batch, losses)
        coefficients = self._observe(step, pairs, sets, example_loss_sums(losses), reference)
        part = self._backward(losses, chunk, coefficients, n_tokens)
        return self._step_loss(part, coefficients, n_tokens)

    def _observed_accumulated(
        self, step: int, pairs: Pairs, chunks: list[Pairs], sets: Sequence[EncodedSet], n_tokens: int
    ) -> float:
        """A step of several micro-batches: statistics from a pass without gradients first."""
        batches = [self._collate(chunk, sets) for chunk in chunks]
        local, reference = [], []
        with torch.no_grad():
            for batch in batches:
                with self.runtime.autocast():
                    losses, _ = label_token_losses(self.net, batch)
                local.append(example_loss_sums(losses))
                reference.append(self._reference_sums(batch, losses))
        reshard(self.net)
        ref = None if self.reference is None else np.concatenate(reference)
        coefficients = self._observe(step, pairs, sets, np.concatenate(local), ref)
        local_sum = 0.0
        for k, (chunk, batch) in enumerate(zip(chunks, batches, strict=True)):
            self._sync(k == len(chunks) - 1)
            with self.runtime.autocast():
                losses, _ = label_token_losses(self.net, batch)
            local_sum += self._backward(losses, chunk, coefficients, n_tokens)
        return self._step_loss(local_sum, coefficients, n_tokens)

    def _observe(
        self,
        step: int,
        pairs: Pairs,
        sets: Sequence[EncodedSet],
        local: np.ndarray,
        reference: np.ndarray | None,
    ) -> np.ndarray | None:
        """Hand the sampler the step's statistics; its per-skill token factors, or None (plain loss)."""
        stats = batch_stats(
            step,
            pairs,
            sets,
            len(self.sampler.skills),
            (self.proc * self.per_process, local),
            reference,
            self.runtime.device,
        )
        self.sampler.observe_batch(stats)
        weights = self.sampler.loss_weights(step)
        return None if weights is None else token_coefficients(weights, stats)

    def _backward(
        self, losses: torch.Tensor, chunk: Pairs, coefficients: np.ndarray | None, n_tokens: int
    ) -> float:
        """Backpropagate one micro-batch's share of the step loss; returns its (local) loss sum."""
        if coefficients is None:
            part = losses.sum()
            (part / max(n_tokens, 1) * self.n_proc).backward()
            return part.item()
        factors = torch.as_tensor(coefficients[[s for s, _ in chunk]], dtype=losses.dtype)
        part = (losses * factors.to(losses.device)[:, None]).sum()
        (part * self.n_proc).backward()
        return part.item()

    def _step_loss(self, local_sum: float, coefficients: np.ndarray | None, n_tokens: int) -> float:
        """The step's loss from this process's (weighted) loss sum."""
        total = processes.sum_over_processes(local_sum)
        return total if coefficients is not None else total / max(n_tokens, 1)

    def _reference_sums(self, batch: dict[str, torch.Tensor], losses: torch.Tensor) -> np.ndarray | None:
        """Per example of the batch: the reference model's summed loss on its label tokens and the
        summed excess max(ℓ_x − ℓ^ref_x, 0) of the trained model's token losses `losses` over the
        reference's, as columns of an [examples, 2] array (None without a reference)."""
        if self.reference is None:
            return None
        with torch.no_grad(), self.runtime.autocast():
            ref, _ = label_token_losses(self.reference, batch)
        excess = (losses.detach() - ref).clamp(min=0)  # zero off the label positions: both are
        return np.stack([example_loss_sums(ref), example_loss_sums(excess)], axis=1)

    def _collate(self, chunk: Pairs, sets: Sequence[EncodedSet]) -> dict[str, torch.Tensor]:
        batch = collate(
            [sets[s].input_ids[i] for s, i in chunk], [sets[s].labels[i] for s, i in chunk], self.pad_id
        )
        return {k: v.to(self.runtime.device) for k, v in batch.items()}

    def _sync(self, last: bool) -> None:
        """Average gradients over the processes after the step's last pass only."""
        if self.n_proc > 1:
            set_gradient_sync(self.net, last)
