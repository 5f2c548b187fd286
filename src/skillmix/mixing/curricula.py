"""Curricula: training examples or skills in order of the initial model's loss.

`curriculum` and `anticurriculum` order single examples by the initial model's loss (easy first,
hard first) and pace them linearly over the rounds; `skill_curriculum` orders whole skills by their
mean initial loss and trains them in stages (Varshney et al., 2022).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skillmix.engine.sampling import MixingInputs, SkillSampler, normalise
from skillmix.infra.errors import SkillmixInputError

REGISTER = [
    {
        "name": "curriculum",
        "worker": "CurriculumSampler",
        "summary": "examples ordered by the initial model's loss, easy first",
        "settings": "curriculum",
        "needs": ["example_losses", "pool"],
    },
    {
        "name": "anticurriculum",
        "worker": "AntiCurriculumSampler",
        "summary": "examples ordered by the initial model's loss, hard first",
        "settings": "curriculum",
        "needs": ["example_losses", "pool"],
    },
    {
        "name": "skill_curriculum",
        "worker": "SkillCurriculumSampler",
        "summary": "skills in order of their initial loss, in stages",
        "settings": "curriculum",
        "needs": ["example_losses"],
    },
]
"""This module's strategies in the registry (skillmix.infra.registry)."""


def _needed(losses: list[list[float]] | None, strategy: str) -> list[list[float]]:
    if losses is None:
        raise ValueError(f"{strategy} needs the initial model's per-example losses")
    return losses


class CurriculumSampler(SkillSampler):
    """Examples ordered once by the initial model's loss, easy → hard (or hard → easy).

    Round r (0-based) draws its update_steps × batch_size examples from the first
    (r + 1) · update_steps · batch_size of that order (linear pacing), without replacement
    while the pool is large enough.
    """

    name = "curriculum"
    supports_fresh = False
    reverse = False

    def __init__(
        self,
        skills: list[str],
        sizes: list[int],
        seed: int,
        example_losses: list[list[float]],
        reverse: bool = False,
        update_steps: int = 100,
    ) -> None:
        if [len(x) for x in example_losses] != list(sizes):
            raise ValueError("example_losses must have one loss per training example")
        super().__init__(skills, sizes, np.asarray(sizes, dtype=np.float64), seed, update_steps)
        flat = [(loss, s, i) for s, losses in enumerate(example_losses) for i, loss in enumerate(losses)]
        flat.sort(key=lambda t: (-t[0] if reverse else t[0], t[1], t[2]))
        self.order = np.array([(s, i) for _, s, i in flat], dtype=np.int64)
        if reverse:
            self.name = "anticurriculum"

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """Orders the run's pool by the initial model's per-example losses."""
        return cls(
            inputs.skills,
            inputs.sizes,
            inputs.seed,
            _needed(inputs.example_losses, cls.name),
            cls.reverse,
            inputs.update_steps,
        )

    def sample(self, step: int, batch_size: int) -> list[tuple[int, int]]:
        """The batch of `step`: a slice of its round's draw from the paced pool."""
        r = self.round_of(step)
        if self._plan is None or self._plan[0] != r:
            n = self.update_steps * batch_size
            pool = min(len(self.order), (r + 1) * n)
            rng = np.random.default_rng([self.seed, 11, r])
            picks = rng.choice(pool, size=n, replace=pool < n)
            self._plan = (r, picks)
            if not self.history or self.history[-1]["round"] < r:
                counts = np.bincount(self.order[picks, 0], minlength=len(self.skills))
                self.history.append({"round": r, "step": step, "weights": (counts / n).tolist()})
        offset = (step - 1 - r * self.update_steps) * batch_size
        return [(int(s), int(i)) for s, i in self.order[self._plan[1][offset : offset + batch_size]]]


class AntiCurriculumSampler(CurriculumSampler):
    """Examples ordered once by the initial model's loss, hard → easy (see CurriculumSampler)."""

    name = "anticurriculum"
    reverse = True


class SkillCurriculumSampler(SkillSampler):
    """Skills in order of their initial mean loss, easiest first (Varshney et al., 2022).

    Round r < k trains skill order[r] with weight 1 − frac and spreads `frac` uniformly over
    the skills before it (round 0: skill order[0] alone); from round k on, the natural mixture.
    `reverse` orders hardest first.
    """

    name = "skill_curriculum"

    def __init__(
        self,
        skills: list[str],
        sizes: list[int],
        seed: int,
        initial_losses: list[float],
        frac: float = 0.0,
        reverse: bool = False,
        update_steps: int = 100,
    ) -> None:
        if not 0.0 <= frac < 1.0:
            raise SkillmixInputError(f"curriculum.frac must be in [0, 1), got {frac}")
        order = np.argsort(np.asarray(initial_losses), kind="stable")
        self.order = [int(i) for i in (order[::-1] if reverse else order)]
        self.frac = float(frac)
        self.natural = normalise(np.asarray(sizes, dtype=np.float64))
        super().__init__(skills, sizes, self.round_mixture(0), seed, update_steps)

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """Orders the skills by their mean initial loss; `settings` is the `curriculum` block."""
        means = [float(np.mean(x)) for x in _needed(inputs.example_losses, cls.name)]
        return cls(
            inputs.skills,
            inputs.sizes,
            inputs.seed,
            means,
            settings["frac"],
            settings["reverse"],
            inputs.update_steps,
        )

    def round_mixture(self, round_: int) -> np.ndarray:
        """The stage's mixture: the new skill, `frac` of earlier ones; then the natural mixture."""
        if round_ >= len(self.order):
            return self.natural
        p = np.zeros(len(self.order))
        earlier = self.order[:round_]
        p[self.order[round_]] = 1.0 - (self.frac if earlier else 0.0)
        for i in earlier:
            p[i] += self.frac / len(earlier)
        return p
