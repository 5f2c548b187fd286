"""RegMix's search: the mixture that the fitted regression predicts best.

Liu et al., "RegMix: Data Mixture as Regression for Language Model Pre-training", ICLR 2025
(arXiv 2407.01492); docs/methods/mixers.md#regmix (paragraph "Search").

C candidates are drawn from Dirichlet(concentration · q) around the natural mixture q (no
temperature); skillmix drops those above the usage cap min(max_usage · q_i, 1) (`search_cap`, so the
final run cannot exceed max_usage passes of a skill's data; RegMix's notebook does not filter), and
holds at 0 the skills no proxy run trained on (their effect cannot be learned: their weight is
capped at the largest one the proxy runs saw). The objective is predicted for every candidate; the
mixture is the mean of the `top_k` candidates with the lowest prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from skillmix.infra.errors import SkillmixInputError


@dataclass
class SearchResult:
    """The searched mixture, the candidates it came from and what was predicted for them."""

    mixture: np.ndarray
    drawn: int
    accepted: int
    top_k: int
    top_k_objective: float
    """The mean predicted objective of the top-k candidates (not the prediction at their mean)."""


def top_k_mean(candidates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(the mean of the `k` candidates with the lowest scores, their row indices); ties keep the
    candidates' order. With fewer than `k` candidates, all of them."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(candidates) == 0 or len(candidates) != len(scores):
        raise ValueError(f"top_k_mean: {len(candidates)} candidates and {len(scores)} scores")
    if not np.all(np.isfinite(scores)):
        raise FloatingPointError("regmix: a candidate's predicted objective is not finite")
    chosen = np.argsort(scores, kind="stable")[: int(k)]
    return np.asarray(candidates, dtype=np.float64)[chosen].mean(axis=0), chosen


def draw_search_candidates(
    q: np.ndarray, n: int, concentration: float, rng: np.random.Generator, active: np.ndarray | None = None
) -> np.ndarray:
    """`n` candidates from Dirichlet(concentration · q) over the `active` skills (all by default;
    the others get weight 0)."""
    q = np.asarray(q, dtype=np.float64)
    active = np.ones(len(q), dtype=bool) if active is None else np.asarray(active, dtype=bool)
    if not active.any():
        raise SkillmixInputError("regmix: no skill has weight in any proxy run; nothing to search")
    out = np.zeros((int(n), len(q)))
    if active.sum() == 1:
        out[:, active] = 1.0
        return out
    out[:, active] = rng.dirichlet(float(concentration) * q[active], size=int(n))
    out[~np.all(np.isfinite(out), axis=1)] = 0.0
    return out


def search_mixture(
    objective: Callable[[np.ndarray], np.ndarray],
    q: np.ndarray,
    *,
    candidates: int,
    top_k: int,
    concentration: float,
    seed: int,
    cap: np.ndarray | None = None,
    max_usage: float | None = None,
    active: np.ndarray | None = None,
) -> SearchResult:
    """The mean of the `top_k` of `candidates` Dirichlet draws around `q` with the lowest
    `objective` (a function of rows of mixtures), drawn with `seed`; with `cap`, draws with a weight
    above it are rejected first (all rejected: an error naming `max_usage`)."""
    rng = np.random.default_rng(int(seed))
    drawn = draw_search_candidates(q, candidates, concentration, rng, active)
    keep = drawn.sum(axis=1) > 0
    if cap is not None:
        keep &= np.all(drawn <= np.asarray(cap) + 1e-12, axis=1)
    accepted = drawn[keep]
    if len(accepted) == 0:
        raise SkillmixInputError(
            f"regmix: all {candidates} search candidates exceed the cap of regmix.sample.max_usage = "
            f"{max_usage} × the natural share; raise regmix.sample.max_usage or regmix.search.candidates, "
            "or set regmix.search.search_cap: false"
        )
    scores = np.asarray(objective(accepted), dtype=np.float64)
    mixture, chosen = top_k_mean(accepted, scores, top_k)
    return SearchResult(mixture, len(drawn), len(accepted), len(chosen), float(scores[chosen].mean()))
