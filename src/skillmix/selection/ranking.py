"""Ranking candidates by a score, the pieces every scored selection method takes its rows with.

:func:`ranked` orders the rows with a finite score (best first, ties by id), :func:`select_top`
takes the top k (or top p%) of them, :func:`balanced_top` takes them in turns over groups (each
group ranking the rows by its own score), as LESS's balanced selections and a round robin over
target tasks do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)


def ranked(ids: Sequence[str], scores: np.ndarray) -> list[int]:
    """Indices of the rows with a finite score, by score descending, ties by id then index."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    id_arr = np.asarray(ids, dtype=str)[finite]
    order = np.lexsort((finite, id_arr, -scores[finite]))  # last key is primary
    return finite[order].tolist()


def select_top(
    ids: Sequence[str], scores: np.ndarray, k: int | None = None, fraction: float | None = None
) -> list[int]:
    """Indices of the top k (or top int(fraction·N), at least 1) rows by score, descending.

    Ties are broken by id ascending (then by index). Rows with a non-finite score (NaN, ±inf; the
    −inf of rows with NaN features) are excluded: if k exceeds the number of finite scores, fewer
    than k indices are returned and a warning is logged.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(ids)
    if scores.shape != (n,):
        raise SkillmixInputError(f"select_top: {n} ids but scores of shape {scores.shape}")
    if (k is None) == (fraction is None):
        raise SkillmixInputError("select_top: give exactly one of k and fraction")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise SkillmixInputError(f"select_top: fraction must be in (0, 1], got {fraction}")
        k = max(1, int(fraction * n))
    if int(k) <= 0:
        raise SkillmixInputError(f"select_top: k must be positive, got {k}")
    k = int(k)
    order = ranked(ids, scores)
    if k > len(order):
        log.warning(
            "select_top: asked for %d rows but only %d of %d have a finite score; returning %d",
            k,
            len(order),
            n,
            len(order),
        )
    return order[:k]


def balanced_top(
    ids: Sequence[str], groups: Mapping[str, np.ndarray], scores: np.ndarray, k: int
) -> list[int]:
    """k row indices taken in turns, one per group (best remaining by the group's score, ties by
    id; groups in order of their best score), then by `scores` once every group is used up.
    A row is taken once; non-finite scores are never taken."""
    ids = np.asarray(ids, dtype=str)  # once for every group's ranking
    order = {g: ranked(ids, s)[:k] for g, s in groups.items()}
    turn = sorted((g for g in order if order[g]), key=lambda g: -groups[g][order[g][0]])
    taken: list[int] = []
    seen: set[int] = set()
    pos = dict.fromkeys(turn, 0)
    while len(taken) < k and turn:
        for g in list(turn):
            rows = order[g]
            while pos[g] < len(rows) and rows[pos[g]] in seen:
                pos[g] += 1
            if pos[g] == len(rows):
                turn.remove(g)
                continue
            taken.append(rows[pos[g]])
            seen.add(rows[pos[g]])
            if len(taken) == k:
                break
    if len(taken) < k:
        rest = [i for i in ranked(ids, scores) if i not in seen]
        taken.extend(rest[: k - len(taken)])
    return taken
