"""Samplers over skills: which skill, and which example of it, fills each batch slot.

Training runs in rounds of `update_steps` optimiser steps. At the start of a round the
sampler fixes the round's mixture p and draws a plan of update_steps × batch_size skill
slots: floor(p_i · n) slots for every skill but the last, which takes the remainder, in a
seeded shuffle. So the per-round counts are a deterministic function of p, and the order of
the seed and the round. Within a skill, examples are drawn without replacement, pass after
pass, each pass a fresh seeded permutation. With `fresh` set, the examples of a round are
new ones generated for it (:class:`skillmix.engine.fresh.FreshSets`): the k-th slot of skill s in
the round's plan takes example k of the round's set of s, and `plan_counts` says how many
examples of each skill the round needs.

This module holds the contract every training strategy implements (:class:`SkillSampler`) and
plain epochs (LESS's training). The strategies themselves are in :mod:`skillmix.mixing`, one
module per method, registered in :mod:`skillmix.infra.registry`.

All sampler state is JSON (mixture, counters, loss window, mixture history) and is saved
with the training resume states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skillmix.infra.errors import SkillmixInputError


def normalise(weights: np.ndarray) -> np.ndarray:
    """Non-negative weights scaled to sum to 1."""
    weights = np.asarray(weights, dtype=np.float64)
    if np.any(weights < 0) or not np.all(np.isfinite(weights)) or weights.sum() <= 0:
        raise ValueError(f"mixture weights must be finite, non-negative, not all zero: {weights}")
    return weights / weights.sum()


def round_counts(p: np.ndarray, n: int) -> np.ndarray:
    """Examples per skill in a round of n: floor(p_i · n), the last skill takes the remainder."""
    counts = np.floor(np.asarray(p) * n).astype(np.int64)
    counts[-1] = n - counts[:-1].sum()
    return counts


@dataclass
class MixingInputs:
    """What a training run hands a strategy when it builds its sampler.

    `skills` and `sizes` are the training skills and their pool sizes; `eval_skills` the skills
    whose validation losses `observe` receives; `targets` the configured target skills. The rest
    is filled only for the strategies whose registry entry needs it (:mod:`skillmix.infra.registry`):
    `graph` (training × evaluation skills), `example_losses` (the initial model's loss of every
    training example), `mixture` (weights by skill name, from a file a stage of its own wrote).
    `steps`, `batch_size` and `eval_every` are the run's budget of optimiser steps, examples per
    step and steps between regular evaluations (train.*; 0 when unknown), for the mixers whose
    schedule or reported cost depends on them.
    """

    skills: list[str]
    sizes: list[int]
    seed: int
    update_steps: int
    eval_skills: list[str]
    targets: list[str] = field(default_factory=list)
    steps: int = 0
    batch_size: int = 0
    eval_every: int = 0
    graph: np.ndarray | None = None
    example_losses: list[list[float]] | None = None
    mixture: dict[str, float] | None = None


@dataclass
class BatchStats:
    """Per-skill training statistics of one optimiser step's batch, from the forward pass whose
    gradient the step applies (summed over every micro-batch and process): the sum of the
    label-token losses, the label-token count and the example count, one entry per training skill
    (zeros for skills not in the batch). With a reference model, `reference_loss_sum` holds the
    reference's summed losses on the same tokens and `excess_loss_sum` the summed per-token excess
    max(ℓ_x − ℓ^ref_x, 0) (DoReMi's clipped excess loss); `example_losses` (per example: skill
    index, summed loss, tokens) are there for mixers that need them."""

    step: int
    loss_sum: np.ndarray
    tokens: np.ndarray
    examples: np.ndarray
    reference_loss_sum: np.ndarray | None = None
    excess_loss_sum: np.ndarray | None = None
    example_losses: list[tuple[int, float, int]] | None = None


class SkillSampler:
    """Draws (skill index, example index) pairs, round by round, from a mixture over skills.

    This base keeps the mixture it was given; subclasses change it between rounds. The engine
    calls, per step: `sample` (the batch), then, for samplers with `needs_batch_losses`,
    `observe_batch` (the step's :class:`BatchStats`, before its backward) and `loss_weights` (per-skill
    weights of the step's loss, or None for the plain label-token mean); after evaluations,
    `observe` (per-skill validation losses; `needs_eval` asks for extra ones). A sampler whose
    mixture changes within a round overrides `segment` (its segments, each with its own mixture
    and allocation). `cost` reports training spent outside the evaluated run.
    """

    name = "fixed"
    supports_fresh = True
    needs_batch_losses = False
    """Whether the engine must pass each step's per-skill training statistics (`observe_batch`)."""
    needs_reference = False
    """Whether those statistics must include a reference model's losses on the same tokens."""
    allocation = "floor"
    """How a segment's slots go to skills: floor (floor(p_i n), the last takes the remainder) or
    multinomial (each slot drawn from p)."""

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """The sampler of a training run, from what the run hands it and its completed settings
        block (the registry's `settings`; empty for strategies without one)."""
        raise NotImplementedError(f"{cls.__name__} does not say how to build it from a run")

    def __init__(
        self, skills: list[str], sizes: list[int], mixture: np.ndarray, seed: int, update_steps: int = 100
    ) -> None:
        if len(skills) != len(sizes) or len(skills) != len(mixture):
            raise ValueError("skills, sizes and mixture must have the same length")
        empty = [s for s, n in zip(skills, sizes, strict=True) if n <= 0]
        if empty:
            raise SkillmixInputError(f"training skills without examples: {empty}")
        if update_steps < 1:
            raise SkillmixInputError(f"train.update_steps must be >= 1, got {update_steps}")
        self.skills = list(skills)
        self.sizes = [int(n) for n in sizes]
        self.seed = int(seed)
        self.update_steps = int(update_steps)
        self.p = normalise(mixture)
        self.draws = [0] * len(skills)
        self.history: list[dict[str, Any]] = []
        self.fresh = False
        self._plan: tuple[int, np.ndarray] | None = None
        self._ranks: np.ndarray | None = None
        self._counts: np.ndarray | None = None
        self._perm_cache: dict[int, tuple[int, np.ndarray]] = {}

    def mixture(self) -> np.ndarray:
        """The mixture of the current round (sums to 1)."""
        return self.p.copy()

    def round_of(self, step: int) -> int:
        """The 0-based round (segment) of a 1-based optimiser step."""
        return self.segment(step)[0]

    def needs_eval(self, step: int) -> bool:
        """Whether the sampler needs a validation evaluation after `step` (beyond the regular ones)."""
        return False

    def observe(self, step: int, losses: dict[str, float]) -> None:
        """Take the per-skill validation losses measured after `step` (0 = before training)."""

    def round_mixture(self, round_: int) -> np.ndarray:
        """The mixture used for round `round_` (the current one by default)."""
        return self.p

    def observe_batch(self, stats: BatchStats) -> None:
        """Take the per-skill training statistics of a step's batch (with `needs_batch_losses`)."""

    def loss_weights(self, step: int) -> np.ndarray | None:
        """Per-skill weights of step `step`'s loss, or None for the plain label-token mean."""
        return None

    def cost(self) -> dict[str, int]:
        """Training this strategy spent outside the evaluated run (reported beside its results)."""
        return {"extra_runs": 0, "extra_steps": 0, "extra_examples": 0, "extra_evaluations": 0}

    def segment(self, step: int) -> tuple[int, int, int]:
        """The segment that holds 1-based step `step`: (index, first step, length in steps).

        A segment is a run of steps on one mixture; by default a round of `update_steps`."""
        r = (step - 1) // self.update_steps
        return r, r * self.update_steps + 1, self.update_steps

    def sample(self, step: int, batch_size: int) -> list[tuple[int, int]]:
        """The (skill index, example index) pairs of step `step`'s batch."""
        r, first, length = self.segment(step)
        if self._plan is None or self._plan[0] != r:
            self._plan = (r, self._round_plan(r, batch_size, step, length))
        offset = (step - first) * batch_size
        slots = self._plan[1][offset : offset + batch_size]
        if self.fresh:
            ranks = self._ranks[offset : offset + batch_size]
            return [(int(s), int(k)) for s, k in zip(slots, ranks, strict=True)]
        return [(int(s), self._next_example(int(s))) for s in slots]

    def use_fresh(self) -> None:
        """Index each round's own new examples instead of the fixed pool (see the module doc)."""
        if not self.supports_fresh:
            raise SkillmixInputError(
                f"the {self.name} sampler orders a fixed pool; it cannot use fresh examples"
            )
        self.fresh = True

    def plan_counts(self) -> np.ndarray:
        """Examples of each skill in the current round's plan (after the round's first `sample`)."""
        if self._counts is None:
            raise RuntimeError("plan_counts is known once the round's first batch has been sampled")
        return self._counts.copy()

    def _round_plan(self, r: int, batch_size: int, step: int, length: int | None = None) -> np.ndarray:
        self.p = normalise(self.round_mixture(r))
        if not self.history or self.history[-1]["round"] < r:
            self.history.append({"round": r, "step": step, "weights": self.p.tolist()})
        n = (self.update_steps if length is None else length) * batch_size
        rng = np.random.default_rng([self.seed, 7, r])
        if self.allocation == "multinomial":
            plan = rng.choice(len(self.skills), size=n, p=self.p)
            counts = np.bincount(plan, minlength=len(self.skills))
        else:
            counts = round_counts(self.p, n)
            plan = rng.permutation(np.repeat(np.arange(len(self.skills)), counts))
        self._counts = counts
        if self.fresh:  # the k-th slot of skill s takes example k of the round's own set of s
            self._ranks = np.empty(len(plan), dtype=np.int64)
            for s in range(len(self.skills)):
                where = plan == s
                self._ranks[where] = np.arange(int(where.sum()))
        return plan

    def _next_example(self, s: int) -> int:
        n = self.sizes[s]
        epoch, pos = divmod(self.draws[s], n)
        cached = self._perm_cache.get(s)
        if cached is None or cached[0] != epoch:
            perm = np.random.default_rng([self.seed, 1_000_003, s, epoch]).permutation(n)
            self._perm_cache[s] = cached = (epoch, perm)
        self.draws[s] += 1
        return int(cached[1][pos])

    def mixture_rows(self) -> list[dict[str, Any]]:
        """The mixture of every round so far: rows of round, step (first step), skill, weight."""
        return [
            {"round": h["round"], "step": h["step"], "skill": skill, "weight": w}
            for h in self.history
            for skill, w in zip(self.skills, h["weights"], strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "name": self.name,
            "p": self.p.tolist(),
            "draws": list(self.draws),
            "history": [dict(h, weights=list(h["weights"])) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by `state_dict`."""
        if state.get("name") != self.name or len(state["draws"]) != len(self.skills):
            raise ValueError(f"sampler state of {state.get('name')!r} does not fit {self.name!r}")
        self.p = np.asarray(state["p"], dtype=np.float64)
        self.draws = [int(d) for d in state["draws"]]
        self.history = list(state["history"])
        self._plan = self._ranks = self._counts = None
        self._perm_cache.clear()


class EpochSampler(SkillSampler):
    """Plain epochs over a fixed example set (LESS's warm-up and selected-data training).

    All examples of all skills form one pool; every epoch visits each exactly once in a fresh
    seeded order, `steps_per_epoch` = ceil(pool / batch_size) batches (the last may be short).
    The batches are a pure function of the step, so resuming needs no sampler state.
    """

    name = "epochs"
    supports_fresh = False

    def __init__(self, skills: list[str], sizes: list[int], seed: int, batch_size: int) -> None:
        if batch_size < 1:
            raise SkillmixInputError(f"batch_size must be >= 1, got {batch_size}")
        total = int(sum(sizes))
        self.batch_size = int(batch_size)
        self.steps_per_epoch = max(1, -(-total // self.batch_size))
        super().__init__(
            skills, sizes, np.asarray(sizes, dtype=np.float64), seed, update_steps=self.steps_per_epoch
        )
        self.offsets = np.cumsum([0, *self.sizes])
        self._epoch_perm: tuple[int, np.ndarray] | None = None

    def epoch_of(self, step: int) -> int:
        """The 0-based epoch of a 1-based optimiser step."""
        return (step - 1) // self.steps_per_epoch

    def sample(self, step: int, batch_size: int) -> list[tuple[int, int]]:
        """The (skill index, example index) pairs of step `step`'s batch."""
        epoch, k = divmod(step - 1, self.steps_per_epoch)
        if not self.history or self.history[-1]["round"] < epoch:
            self.history.append({"round": epoch, "step": step, "weights": self.p.tolist()})
        if self._epoch_perm is None or self._epoch_perm[0] != epoch:
            perm = np.random.default_rng([self.seed, 11, epoch]).permutation(int(self.offsets[-1]))
            self._epoch_perm = (epoch, perm)
        flat = self._epoch_perm[1][k * self.batch_size : (k + 1) * self.batch_size]
        skill = np.searchsorted(self.offsets, flat, side="right") - 1
        return [(int(s), int(f - self.offsets[s])) for s, f in zip(skill, flat, strict=True)]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by `state_dict`."""
        super().load_state_dict(state)
        self._epoch_perm = None
