"""The fixed-mixture baselines: the natural mixture (`random`), uniform over skills
(`stratified`), and uniform over the target skills only (`target_only`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from skillmix.engine.sampling import MixingInputs, SkillSampler, normalise
from skillmix.infra.errors import SkillmixInputError

REGISTER = [
    {"name": "random", "worker": "RandomSampler", "summary": "skills in proportion to their data"},
    {"name": "stratified", "worker": "StratifiedSampler", "summary": "every skill equally often"},
    {
        "name": "target_only",
        "worker": "TargetOnlySampler",
        "summary": "only train.target_skills, uniformly",
        "needs": ["targets"],
    },
]
"""This module's strategies in the registry (skillmix.infra.registry)."""


class RandomSampler(SkillSampler):
    """Skills in proportion to their number of training examples (the natural mixture)."""

    name = "random"

    def __init__(self, skills: list[str], sizes: list[int], seed: int, update_steps: int = 100) -> None:
        super().__init__(skills, sizes, np.asarray(sizes, dtype=np.float64), seed, update_steps)

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """The run's skills and sizes; no settings."""
        return cls(inputs.skills, inputs.sizes, inputs.seed, inputs.update_steps)


class StratifiedSampler(SkillSampler):
    """Every skill equally often, whatever its size."""

    name = "stratified"

    def __init__(self, skills: list[str], sizes: list[int], seed: int, update_steps: int = 100) -> None:
        super().__init__(skills, sizes, np.ones(len(skills)), seed, update_steps)

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """The run's skills and sizes; no settings."""
        return cls(inputs.skills, inputs.sizes, inputs.seed, inputs.update_steps)


class TargetOnlySampler(SkillSampler):
    """Only the target skills, uniformly (the fine-tuning baseline)."""

    name = "target_only"

    def __init__(
        self, skills: list[str], sizes: list[int], seed: int, targets: list[str], update_steps: int = 100
    ) -> None:
        missing = [t for t in targets if t not in skills]
        if not targets or missing:
            raise SkillmixInputError(
                "train.target_skills must name training skills for target_only; "
                f"not training skills: {missing}"
            )
        super().__init__(skills, sizes, np.array([float(s in targets) for s in skills]), seed, update_steps)

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """The run's skills, uniform over its target skills."""
        return cls(inputs.skills, inputs.sizes, inputs.seed, list(inputs.targets), inputs.update_steps)


class GivenMixtureSampler(SkillSampler):
    """A fixed mixture given by skill name: the base of the strategies whose own stage learns the
    mixture the run trains on (DoReMi's averaged weights, RegMix's fitted mixture); `extra` is the
    cost of that stage (see `cost`)."""

    def __init__(
        self,
        skills: list[str],
        sizes: list[int],
        seed: int,
        mixture: Mapping[str, float],
        update_steps: int = 100,
        extra: dict[str, Any] | None = None,
    ) -> None:
        missing = [s for s in skills if s not in mixture]
        if missing:
            raise SkillmixInputError(
                f"train.strategies {self.name}: the mixture has no weight for skills {missing}"
            )
        weights = np.asarray([float(mixture[s]) for s in skills], dtype=np.float64)
        try:
            normalise(weights)
        except ValueError as exc:
            raise SkillmixInputError(f"train.strategies {self.name}: {exc}") from exc
        super().__init__(skills, sizes, weights, seed, update_steps)
        self.extra = extra

    def cost(self) -> dict[str, Any]:
        """The training its stage spent outside the run (`extra`), or none when not known."""
        return dict(self.extra) if self.extra is not None else super().cost()
