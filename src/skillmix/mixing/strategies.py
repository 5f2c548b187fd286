"""Training strategies by name: the registered sampler of a strategy, built for one run.

The strategies themselves are one module each in this package (:mod:`skillmix.mixing.baselines`,
:mod:`skillmix.mixing.curricula`, :mod:`skillmix.mixing.skillit`, …), named in
:mod:`skillmix.infra.registry`; a strategy's module is imported only when a run uses it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skillmix.engine.sampling import MixingInputs, SkillSampler
from skillmix.infra import registry
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError


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


def read_mixture_file(
    path: str | os.PathLike, skills: Sequence[str], stamp: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """The weights of `skills` from a mixture file (DoReMi's `weights.json`, RegMix's `mixture.json`, or
    any JSON object of weights by skill name, at the top level or under "weights"), by skill name.

    Raises naming the file when it is unreadable, lacks a skill of the run, holds a weight that is
    not a finite non-negative number, or (with `stamp`) was made with other settings.
    """
    from skillmix.infra.stamps import stamp_differences

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SkillmixInputError(f"{path}: not a readable mixture file ({exc})") from exc
    weights = data.get("weights", data) if isinstance(data, dict) else None
    if not isinstance(weights, dict):
        raise SkillmixInputError(f"{path}: expected a JSON object of weights by skill name")
    missing = [s for s in skills if s not in weights]
    if missing:
        raise SkillmixInputError(
            f"{path}: no weight for skills {missing} of the run (it has {sorted(weights)})"
        )
    out = {}
    for s in skills:
        w = weights[s]
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise SkillmixInputError(
                f"{path}: the weight of skill {s!r} is {w!r}; expected a finite number >= 0"
            )
        out[s] = float(w)
    if sum(out.values()) <= 0:
        raise SkillmixInputError(f"{path}: the weights of the run's skills {list(skills)} are all 0")
    if stamp is not None:
        differences = stamp_differences(data.get("stamp"), stamp)
        if differences:
            raise SkillmixInputError(
                f"{path} was made with other settings than the config gives now: "
                + "; ".join(differences[:5])
                + f"; delete it and run again (rm {path})"
            )
    return out


def skill_subset(names: Sequence[str] | None, skills: list[str], key: str) -> list[str]:
    """Named skills in manifest order (all of them when `names` is empty); unknown names are errors."""
    if not names:
        return list(skills)
    unknown = [n for n in names if n not in skills]
    if unknown:
        raise SkillmixInputError(f"{key}: {unknown} are not skills of the data; skills are {skills}")
    return [s for s in skills if s in names]
