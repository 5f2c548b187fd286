"""The arithmetic of Aioli's LearnParams (Chen et al., "Aioli: A Unified Optimization Framework for
Language Model Data Mixing", ICLR 2025; docs/methods/mixers.md#aioli): the smoothed one-hot mixtures,
the sweep order, unmixing and normalising the learned parameters, and the setup checks. The sampler
is :class:`skillmix.mixing.aioli.AioliSampler`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skillmix.infra.errors import SkillmixInputError

SWEEP_STREAM = 3_100_007
"""Tags the seeded stream of the LearnParams sweep orders apart from any other stream."""


def smoothed_one_hot(k: int, factor: float) -> np.ndarray:
    """P: row j is the smoothed one-hot mixture of skill j, `factor` on j and (1 − factor)/(k − 1) on
    every other skill (docs/methods/mixers.md#aioli)."""
    if k < 2:
        raise ValueError("smoothed one-hot mixtures need at least two skills")
    rest = (1.0 - factor) / (k - 1)
    return np.full((k, k), rest) + np.eye(k) * (factor - rest)


def sweep_order(seed: int, round_: int, k: int, lp_rounds: int) -> list[int]:
    """The skills of round `round_`'s LearnParams intervals in order: `lp_rounds` independent seeded
    permutations of the k skills, concatenated."""
    rng = np.random.default_rng([int(seed), SWEEP_STREAM, int(round_)])
    return [int(j) for _ in range(lp_rounds) for j in rng.permutation(k)]


def unmix(measured: np.ndarray, factor: float, diagonal: bool = False) -> np.ndarray:
    """A from the averaged measurements M (eval skills × training skills): every row of M is P times
    the same row of A, so A[i, :] = P⁻¹ M[i, :]; `factor` 1 gives A = M, `diagonal` keeps
    M_jj / factor on the diagonal and zero elsewhere."""
    measured = np.asarray(measured, dtype=np.float64)
    if diagonal:
        return np.diag(np.diag(measured) / factor)
    if factor == 1.0:
        return measured.copy()
    mixing = smoothed_one_hot(measured.shape[1], factor)
    return np.linalg.solve(mixing, measured.T).T


def normalise_params(params: np.ndarray) -> tuple[np.ndarray, bool]:
    """Ā: A shifted by its minimum when that is negative (one shift for the whole matrix), then
    divided by the sum of all its entries. When nothing is left to divide (every entry equal after
    the shift), Ā = 0 and the second value is True (the round changes nothing)."""
    shifted = np.asarray(params, dtype=np.float64)
    low = shifted.min()
    if low < 0:
        shifted = shifted - low
    total = shifted.sum()
    if not total > 0:
        return np.zeros_like(shifted), True
    return shifted / total, False


def softmax(logits: np.ndarray) -> np.ndarray:
    """exp(logits) normalised, computed after subtracting the largest logit."""
    e = np.exp(np.asarray(logits, dtype=np.float64) - np.max(logits))
    return e / e.sum()


def mixture_summary(p: np.ndarray) -> tuple[float, float]:
    """(max_i p_i, entropy of p in nats): how close a mixture is to collapsing on one skill."""
    p = np.asarray(p, dtype=np.float64)
    nonzero = p[p > 0]
    return float(p.max()), float(-(nonzero * np.log(nonzero)).sum())


def check_setup(
    k: int,
    same_skills: bool,
    cfg: dict[str, Any],
    update_steps: int,
    steps: int,
) -> None:
    """Refuse settings Aioli cannot run with k > 1 training skills, naming the keys: U ≤ L, (S −
    prior_steps) % U ≠ 0, f ≤ 1/k, `diagonal` with f = 1 or other evaluation skills, a prior that
    does not fit (docs/methods/mixers.md#aioli)."""
    f, lp = cfg["one_hot_factor"], cfg["lp_rounds"] * k * cfg["lp_steps"]
    if not f > 1.0 / k or f > 1.0:
        raise SkillmixInputError(
            f"aioli.one_hot_factor = {f} must be in (1/k, 1] = ({1.0 / k:.6g}, 1] for k = {k} training "
            "skills (the smoothed one-hot mixtures must be invertible)"
        )
    if update_steps <= lp:
        raise SkillmixInputError(
            f"train.update_steps = {update_steps} must exceed the LearnParams steps of a round, "
            f"aioli.lp_rounds × k × aioli.lp_steps = {cfg['lp_rounds']} × {k} × {cfg['lp_steps']} = {lp}"
        )
    if cfg["diagonal"] and (f == 1.0 or not same_skills):
        raise SkillmixInputError(
            "aioli.diagonal needs aioli.one_hot_factor < 1 and the evaluation skills "
            f"(train.target_skills) equal to the training skills; got one_hot_factor = {f}"
        )
    prior, prior_steps = cfg["prior"], cfg["prior_steps"]
    if (prior is None) != (prior_steps == 0):
        raise SkillmixInputError(
            "aioli.prior and aioli.prior_steps go together: a prior mixture needs prior_steps > 0 and "
            f"prior_steps > 0 needs a prior; got prior = {prior}, prior_steps = {prior_steps}"
        )
    if prior is not None:
        weights = np.asarray(prior, dtype=np.float64)
        if len(weights) != k or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise SkillmixInputError(
                f"aioli.prior needs {k} finite, non-negative weights (one per training skill) with a "
                f"positive sum; got {list(prior)}"
            )
    if steps > 0 and (prior_steps >= steps or (steps - prior_steps) % update_steps):
        raise SkillmixInputError(
            f"aioli: train.steps − aioli.prior_steps = {steps} − {prior_steps} must be a positive "
            f"multiple of train.update_steps = {update_steps} (every round is whole)"
        )
