"""RegMix (Liu et al., "RegMix: Data Mixture as Regression for Language Model Pre-training",
ICLR 2025, arXiv 2407.01492; docs/methods/mixers.md#regmix).

Short proxy runs on mixtures sampled around the natural one, a regression from mixture to
validation loss, and the mixture it predicts best: the main run (the `regmix` strategy) trains on
that fixed mixture, read by skill name from the fit's `results/regmix/mixture.json`. The stage's
jobs are in :mod:`skillmix.mixing.regmix_fit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skillmix.engine.sampling import MixingInputs, SkillSampler
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.baselines import GivenMixtureSampler

REGISTER = [
    {
        "name": "regmix",
        "worker": "RegMixSampler",
        "summary": "RegMix's mixture, chosen by a regression fitted on short proxy runs (a fixed mixture)",
        "settings": "regmix",
        "needs": ["mixture_file"],
    },
]
"""This module's strategy in the registry (skillmix.infra.registry)."""


def proxy_evaluations(steps: int, eval_every: int) -> int:
    """Validation passes of one proxy run: before training, every `eval_every` steps and the last."""
    return len({0, int(steps), *range(int(eval_every), int(steps) + 1, int(eval_every))})


def regmix_cost(
    settings: Mapping[str, Any], k: int, batch_size: int | None, eval_every: int | None
) -> dict[str, int | None]:
    """RegMix's training outside the main run: `regmix.runs` proxy runs of `regmix.proxy.steps` steps
    each (none for one skill, or when the runs come from a table made elsewhere, `regmix.proxy_runs`).
    Fields that need a setting the run does not pass (batch size, evaluation cadence) are None."""
    runs = 0 if k <= 1 or settings.get("proxy_runs") else int(settings["runs"])
    steps = int(settings["proxy"]["steps"])
    return {
        "extra_runs": runs,
        "extra_steps": runs * steps,
        "extra_examples": None if batch_size is None else runs * steps * int(batch_size),
        "extra_evaluations": None if eval_every is None else runs * proxy_evaluations(steps, eval_every),
    }


class RegMixSampler(GivenMixtureSampler):
    """The `regmix` strategy: the main run trains on the mixture RegMix's fit chose, a fixed mixture
    read by skill name (Liu et al., ICLR 2025; docs/methods/mixers.md#regmix)."""

    name = "regmix"

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """The run's skills on `inputs.mixture` (from `results/regmix/mixture.json`); `settings` is the
        completed `regmix` block (its runs and proxy steps are the cost)."""
        if inputs.mixture is None:
            raise SkillmixInputError(
                "train.strategies regmix: needs the mixture of RegMix's fit (results/regmix/mixture.json)"
            )
        batch, every = inputs.batch_size or None, inputs.eval_every or None
        extra = regmix_cost(settings, len(inputs.skills), batch, every) if settings else None
        return cls(inputs.skills, inputs.sizes, inputs.seed, inputs.mixture, inputs.update_steps, extra)
