"""LESS's candidate pool and its warm-up subset (docs/methods/less.md#pool-and-targets).

The candidate pool is the training slices of the pool skills, in manifest order and slice row
order. The warm-up subset is the first int(fraction·N) indices (at least one) of a legacy NumPy
permutation of the pool under the warm-up seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from skillmix.data.slicing import read_manifest, read_slices
from skillmix.data.sources import COLUMNS
from skillmix.infra.errors import SkillmixInputError


def pool_frame(
    manifest_path: str | os.PathLike,
    train_paths: Sequence[str | os.PathLike],
    skills: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The candidate pool: the training rows of `skills` (all by default), manifest order, row order."""
    manifest = read_manifest(manifest_path)
    all_skills = [s["name"] for s in manifest["skills"]]
    if skills:
        unknown = [s for s in skills if s not in all_skills]
        if unknown:
            raise SkillmixInputError(
                f"select.pool.skills: {unknown} are not skills of the data: {all_skills}"
            )
    wanted = [s for s in all_skills if not skills or s in skills]
    frames = read_slices(train_paths, wanted, "candidate pool")
    pool = pd.concat([frames[s][COLUMNS] for s in wanted], ignore_index=True)
    if pool.empty:
        raise SkillmixInputError("candidate pool: the training slices of the pool skills hold no rows")
    return pool


def warmup_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """Pool rows of the warm-up subset: the first max(1, int(fraction·n)) of a seeded permutation."""
    if not 0 < fraction <= 1:
        raise SkillmixInputError(f"select.warmup.fraction must be in (0, 1], got {fraction}")
    k = max(1, int(fraction * n))
    return np.random.RandomState(seed).permutation(n)[:k]
