"""Training strategies by name: the registered sampler of a strategy, built for one run.

The strategies themselves are one module each in this package (:mod:`skillmix.mixing.baselines`,
:mod:`skillmix.mixing.curricula`, :mod:`skillmix.mixing.skillit`, …), named in
:mod:`skillmix.infra.registry`; a strategy's module is imported only when a run uses it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skillmix.engine.sampling import MixingInputs, SkillSampler
from skillmix.infra import registry
from skillmix.infra.config import complete


def strategy_settings(strategy: str, block: dict[str, Any] | None) -> dict[str, Any]:
    """A strategy's settings block with the schema's defaults (empty for strategies without one)."""
    method = registry.lookup("strategy", strategy, "train.strategies")
    return complete(method.settings, block) if method.settings else {}


def build_sampler(strategy: str, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
    """The sampler of `strategy` for a run; `settings` is its completed settings block."""
    method = registry.lookup("strategy", strategy, "train.strategies")
    return method.load().from_inputs(inputs, settings)


def make_sampler(
    strategy: str,
    skills: list[str],
    sizes: list[int],
    seed: int,
    update_steps: int = 100,
    *,
    graph: np.ndarray | None = None,
    eval_skills: list[str] | None = None,
    targets: list[str] | None = None,
    settings: dict[str, Any] | None = None,
    example_losses: list[list[float]] | None = None,
) -> SkillSampler:
    """The sampler of a training strategy from plain arguments (tests, notebooks): `settings` is
    its settings block, completed with the schema's defaults here."""
    inputs = MixingInputs(
        skills=list(skills),
        sizes=[int(n) for n in sizes],
        seed=seed,
        update_steps=update_steps,
        eval_skills=list(eval_skills or skills),
        targets=list(targets or []),
        graph=graph,
        example_losses=example_losses,
    )
    return build_sampler(strategy, inputs, strategy_settings(strategy, settings))
