"""The random baseline of selection: as many candidates as the other methods take, uniformly at
random from the pool (seeded by `select.selection.seed`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from skillmix.infra.errors import SkillmixInputError
from skillmix.selection.selector import Selector

REGISTER = [
    {
        "name": "random",
        "worker": "RandomSelector",
        "summary": "the same number of candidates uniformly at random",
        "settings": "select",
    },
]
"""This module's selection method in the registry (skillmix.infra.registry)."""


class RandomSelector(Selector):
    """`size` pool rows drawn uniformly without replacement, in pool order (no scores, no target)."""

    name = "random"

    def choose(
        self, pool: pd.DataFrame, size: int, scores: pd.DataFrame | None, target: pd.DataFrame | None
    ) -> pd.DataFrame:
        return random_examples(pool, size, self.settings["selection"]["seed"])


def random_examples(pool: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """`size` pool rows drawn uniformly without replacement (seeded), in pool order."""
    if not 1 <= size <= len(pool):
        raise SkillmixInputError(f"random selection of {size} from a pool of {len(pool)}")
    picked = np.sort(np.random.default_rng([seed, 5]).choice(len(pool), size=size, replace=False))
    out = pool.iloc[picked].reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out
