"""RegMix's proxy mixtures: N mixtures drawn around the natural mixture, within a usage cap.

Liu et al., "RegMix: Data Mixture as Regression for Language Model Pre-training", ICLR 2025
(arXiv 2407.01492); docs/methods/mixers.md#regmix (paragraph "Proxy mixtures").

The natural mixture q (skills in proportion to their training examples) is tempered, q_τ ∝ q^τ;
each candidate takes one of `n_strengths` Dirichlet strengths log-spaced from `min_strength` to
`max_strength`, uniformly at random, and is drawn from Dirichlet(strength · q_τ). A candidate with a
weight above min(max_usage · q_i, 1) is rejected; the cap is computed on the **untempered** q (a
weight may not exceed `max_usage` times the skill's natural share: its passes over the data in the
final run). Accepted candidates are post-processed (weights below `minimum` set to 0, renormalised,
rounded to multiples of `minimum`, renormalised again: the mixture actually used); `multiplier` × N
candidates are drawn, near-duplicates dropped, and N of the rest kept at random.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skillmix.infra.errors import SkillmixInputError

DUPLICATE_L1 = 1e-5
"""Two sorted neighbouring mixtures closer than this in L1 distance count as one."""


def natural_prior(sizes: np.ndarray | list[int]) -> np.ndarray:
    """The natural mixture q_i = n_i / Σ_j n_j of skills with n_i training examples (all n_i > 0)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.ndim != 1 or len(sizes) == 0 or np.any(~np.isfinite(sizes)) or np.any(sizes <= 0):
        raise SkillmixInputError(f"regmix: every training skill needs training examples; sizes {sizes}")
    return sizes / sizes.sum()


def tempered(q: np.ndarray, temperature: float) -> np.ndarray:
    """q^τ / Σ q^τ (the sampling prior); q itself when τ = 1."""
    if not 0 < temperature <= 1:
        raise SkillmixInputError(f"regmix.sample.temperature must be in (0, 1], got {temperature}")
    q = np.asarray(q, dtype=np.float64)
    if temperature == 1:
        return q / q.sum()
    t = q**temperature
    return t / t.sum()


def strengths(min_strength: float, max_strength: float, n: int) -> np.ndarray:
    """The `n` Dirichlet strengths, log-spaced from `min_strength` to `max_strength`."""
    if not 0 < min_strength <= max_strength:
        raise SkillmixInputError(
            "regmix.sample: need 0 < min_strength <= max_strength, got "
            f"min_strength {min_strength}, max_strength {max_strength}"
        )
    if n < 1:
        raise SkillmixInputError(f"regmix.sample.n_strengths must be >= 1, got {n}")
    return np.logspace(np.log10(min_strength), np.log10(max_strength), int(n))


def usage_cap(q: np.ndarray, max_usage: float) -> np.ndarray:
    """The largest weight of each skill: min(max_usage · q_i, 1), on the untempered q."""
    if not max_usage > 0:
        raise SkillmixInputError(f"regmix.sample.max_usage must be > 0, got {max_usage}")
    return np.minimum(float(max_usage) * np.asarray(q, dtype=np.float64), 1.0)


def postprocess(x: np.ndarray, minimum: float) -> np.ndarray:
    """Rows of candidate mixtures as RegMix records them: weights below `minimum` set to 0,
    renormalised, rounded to multiples of `minimum`; then renormalised again (skillmix: the rounded
    weights may sum to 1 ± k·minimum/2, and the mixture actually used sums to 1). A row left without
    any weight is all zeros (the caller rejects it)."""
    x = np.array(x, dtype=np.float64, ndmin=2)
    if minimum > 0:
        x[x < minimum] = 0.0
    x = _renormalised(x)
    if minimum > 0:
        x = np.round(x / minimum) * minimum
    return _renormalised(x)


def _renormalised(x: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; rows summing to 0 stay 0."""
    sums = x.sum(axis=1, keepdims=True)
    return np.divide(x, sums, out=np.zeros_like(x), where=sums > 0)


def draw_candidates(prior: np.ndarray, n: int, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`n` candidates, each from Dirichlet(s · prior) with its strength s drawn uniformly from
    `values`; rows that the draw could not normalise (every gamma variate 0) are all zeros."""
    prior = np.asarray(prior, dtype=np.float64)
    which = rng.integers(0, len(values), size=int(n))
    out = np.zeros((int(n), len(prior)))
    for j, strength in enumerate(values):
        rows = np.flatnonzero(which == j)
        if len(rows):
            out[rows] = rng.dirichlet(strength * prior, size=len(rows))
    out[~np.all(np.isfinite(out), axis=1)] = 0.0
    return out


def within_cap(x: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Which rows are mixtures (positive sum) with no weight above its cap."""
    return (x.sum(axis=1) > 0) & np.all(x <= cap + 1e-12, axis=1)


def drop_near_duplicates(x: np.ndarray, tolerance: float = DUPLICATE_L1) -> np.ndarray:
    """The rows in lexicographic order, each kept only if its L1 distance to the previously kept
    row exceeds `tolerance`."""
    if len(x) == 0:
        return x
    ordered = x[np.lexsort(x.T[::-1])]
    kept = [0]
    for i in range(1, len(ordered)):
        if np.abs(ordered[i] - ordered[kept[-1]]).sum() > tolerance:
            kept.append(i)
    return ordered[kept]


def sample_mixtures(
    sizes: np.ndarray | list[int], runs: int, sample_cfg: dict[str, Any], seed: int
) -> np.ndarray:
    """RegMix's `runs` proxy mixtures (rows, on the simplex, in the skills' order) for skills with
    `sizes` training examples; `sample_cfg` is the completed `regmix.sample` block, `seed` its seed
    (regmix.sample.seed, else train.seed). Fewer than `runs` distinct accepted candidates is an
    error naming the cap (max_usage) and the multiplier.

    The cap is checked on the drawn candidate (as RegMix does) and again after post-processing,
    whose renormalisations can lift a weight just over it: every mixture returned is within it."""
    q = natural_prior(sizes)
    prior = tempered(q, float(sample_cfg["temperature"]))
    values = strengths(
        float(sample_cfg["min_strength"]), float(sample_cfg["max_strength"]), int(sample_cfg["n_strengths"])
    )
    cap = usage_cap(q, float(sample_cfg["max_usage"]))
    minimum, multiplier = float(sample_cfg["minimum"]), int(sample_cfg["multiplier"])
    if not 0 <= minimum < 1:
        raise SkillmixInputError(f"regmix.sample.minimum must be in [0, 1), got {minimum}")
    if runs < 1 or multiplier < 1:
        raise SkillmixInputError(
            f"regmix.runs and regmix.sample.multiplier must be >= 1: {runs}, {multiplier}"
        )
    rng = np.random.default_rng(int(seed))
    drawn = draw_candidates(prior, multiplier * runs, values, rng)
    drawn = drawn[within_cap(drawn, cap)]
    kept = postprocess(drawn, minimum) if len(drawn) else drawn
    kept = drop_near_duplicates(kept[within_cap(kept, cap)])
    if len(kept) < runs:
        raise SkillmixInputError(
            f"regmix: only {len(kept)} distinct proxy mixtures of the {runs} needed (regmix.runs) passed "
            f"the cap of regmix.sample.max_usage = {sample_cfg['max_usage']} × the natural share, out "
            f"of regmix.sample.multiplier = {multiplier} × {runs} candidates; raise max_usage or "
            "multiplier, or lower regmix.runs"
        )
    return kept[rng.choice(len(kept), size=runs, replace=False)]
