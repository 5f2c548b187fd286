"""The gradient datastore's shard files: unit-normalised feature rows as float16 `.npy`."""

from __future__ import annotations

import os

import numpy as np
import torch

from skillmix.engine.projection import normalise_rows
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_file

PathLike = str | os.PathLike


def write_shard(features: torch.Tensor, path: PathLike) -> None:
    """Normalise rows (eps 1e-12), cast to float16 and save as `.npy`; the file appears only when complete.

    NaN rows stay NaN, so that scoring can find and report them.
    """
    if features.ndim != 2:
        raise SkillmixInputError(f"{path}: shard features must be 2-D [rows, d], got {tuple(features.shape)}")
    arr = normalise_rows(features.detach()).cpu().numpy().astype(np.float16)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def read_shard(path: PathLike, mmap: bool = True) -> np.ndarray:
    """A shard as a [rows, d] array, memory-mapped read-only unless mmap=False."""
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SkillmixInputError(f"{path}: cannot read feature shard ({e})") from e
    if arr.ndim != 2:
        raise SkillmixInputError(f"{path}: feature shard must be 2-D [rows, d], got shape {arr.shape}")
    return arr
