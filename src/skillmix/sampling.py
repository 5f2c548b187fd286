"""Samplers over skills: which skill, and which example of it, fills each batch slot.

A sampler holds a mixture p over the training skills. The skills of step t's batch are drawn
from p with a generator seeded by (seed, t), so they depend only on the seed, the step and
the mixture. Within a skill, examples are drawn without replacement, pass after pass, each
pass a fresh seeded permutation. All state is a few integers and the mixture, saved with the
training checkpoints.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skillmix.errors import SkillmixInputError


class SkillSampler:
    """Draws (skill index, example index) pairs by a mixture over skills.

    Subclasses change the mixture as training goes (`observe` receives the per-skill
    validation losses after each evaluation); this base keeps it fixed.
    """

    name = "fixed"

    def __init__(self, skills: list[str], sizes: list[int], mixture: np.ndarray, seed: int) -> None:
        if len(skills) != len(sizes) or len(skills) != len(mixture):
            raise ValueError("skills, sizes and mixture must have the same length")
        if any(n <= 0 for n in sizes):
            empty = [s for s, n in zip(skills, sizes, strict=True) if n <= 0]
            raise SkillmixInputError(f"training skills without examples: {empty}")
        self.skills = list(skills)
        self.sizes = [int(n) for n in sizes]
        self.seed = int(seed)
        self.p = normalise(np.asarray(mixture, dtype=np.float64))
        self.draws = [0] * len(skills)
        self._perm_cache: dict[int, tuple[int, np.ndarray]] = {}

    def mixture(self) -> np.ndarray:
        """The current mixture over skills (sums to 1)."""
        return self.p.copy()

    def observe(self, step: int, losses: dict[str, float]) -> None:
        """Take the per-skill validation losses measured at `step` (fixed mixture: ignored)."""

    def sample(self, step: int, batch_size: int) -> list[tuple[int, int]]:
        """The (skill index, example index) pairs of step `step`'s batch."""
        rng = np.random.default_rng([self.seed, step])
        skills = rng.choice(len(self.skills), size=batch_size, p=self.p)
        return [(int(s), self._next_example(int(s))) for s in skills]

    def _next_example(self, s: int) -> int:
        n = self.sizes[s]
        epoch, pos = divmod(self.draws[s], n)
        cached = self._perm_cache.get(s)
        if cached is None or cached[0] != epoch:
            perm = np.random.default_rng([self.seed, 1_000_003, s, epoch]).permutation(n)
            self._perm_cache[s] = cached = (epoch, perm)
        self.draws[s] += 1
        return int(cached[1][pos])

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (mixture and per-skill draw counters)."""
        return {"name": self.name, "p": self.p.tolist(), "draws": list(self.draws)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by `state_dict`."""
        if state.get("name") != self.name or len(state["draws"]) != len(self.skills):
            raise ValueError(f"sampler state of {state.get('name')!r} does not fit {self.name!r}")
        self.p = np.asarray(state["p"], dtype=np.float64)
        self.draws = [int(d) for d in state["draws"]]
        self._perm_cache.clear()


class RandomSampler(SkillSampler):
    """Skills in proportion to their number of training examples (the natural mixture)."""

    name = "random"

    def __init__(self, skills: list[str], sizes: list[int], seed: int) -> None:
        super().__init__(skills, sizes, np.asarray(sizes, dtype=np.float64), seed)


class StratifiedSampler(SkillSampler):
    """Every skill equally often, whatever its size."""

    name = "stratified"

    def __init__(self, skills: list[str], sizes: list[int], seed: int) -> None:
        super().__init__(skills, sizes, np.ones(len(skills)), seed)


SAMPLERS: dict[str, type[SkillSampler]] = {"random": RandomSampler, "stratified": StratifiedSampler}


def make_sampler(strategy: str, skills: list[str], sizes: list[int], seed: int) -> SkillSampler:
    """The sampler named by a training strategy."""
    try:
        cls = SAMPLERS[strategy]
    except KeyError:
        raise SkillmixInputError(
            f"train.strategies: unknown strategy {strategy!r}; expected one of {sorted(SAMPLERS)}"
        ) from None
    return cls(skills, sizes, seed)


def normalise(weights: np.ndarray) -> np.ndarray:
    """Non-negative weights scaled to sum to 1."""
    if np.any(weights < 0) or not np.all(np.isfinite(weights)) or weights.sum() <= 0:
        raise ValueError(f"mixture weights must be finite, non-negative, not all zero: {weights}")
    return weights / weights.sum()
