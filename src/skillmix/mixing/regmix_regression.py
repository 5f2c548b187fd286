"""RegMix's regression from a mixture to a validation loss: LightGBM or linear least squares, one
model per evaluation skill, and the out-of-fold diagnostics of the fit.

Liu et al., "RegMix: Data Mixture as Regression for Language Model Pre-training", ICLR 2025
(arXiv 2407.01492); docs/methods/mixers.md#regmix (paragraph "Regression").

LightGBM runs with the paper's settings (gbdt, L2 regression, metrics l1 and l2, `num_iterations`
rounds at `learning_rate`, its `seed`, every other parameter at LightGBM's default) through its native
`lightgbm.train` API, on one thread. Early stopping is off by default; when
`early_stopping_rounds` is set it stops on a held-out share (`holdout`) of the proxy runs, never on
the runs it is judged on. The linear model is ordinary least squares with an intercept, solved
rank-tolerantly (the weights sum to 1, so the design is collinear).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from skillmix.infra.errors import SkillmixInputError

REGRESSORS = ("lightgbm", "linear")
FOLDS = 5
"""Folds of the out-of-fold diagnostics (and the fewest proxy runs a fit accepts)."""


class Model(Protocol):
    """A fitted regressor: predicted losses of rows of mixture weights."""

    def predict(self, x: np.ndarray) -> np.ndarray: ...


class LinearModel:
    """y ≈ c + w · x by least squares (minimum-norm solution when the design is rank-deficient)."""

    def __init__(self, coef: np.ndarray) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> LinearModel:
        """The least-squares fit of `y` on the columns of `x` and an intercept."""
        design = np.column_stack([np.ones(len(x)), np.asarray(x, dtype=np.float64)])
        coef, *_ = np.linalg.lstsq(design, np.asarray(y, dtype=np.float64), rcond=None)
        return cls(coef)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """c + x · w for every row of `x`."""
        x = np.asarray(x, dtype=np.float64)
        return self.coef[0] + x @ self.coef[1:]


def lightgbm_module() -> Any:
    """The `lightgbm` package, or an error saying how to get it or avoid it."""
    try:
        import lightgbm
    except ImportError as exc:
        raise SkillmixInputError(
            "regmix.regressor lightgbm needs the lightgbm package: pip install 'skillmix[regmix]' "
            "(or pip install lightgbm), or set regmix.regressor: linear"
        ) from exc
    return lightgbm


def lightgbm_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """LightGBM's parameters from the `regmix.lightgbm` block (the rounds go to `train` apart)."""
    return {
        "boosting": "gbdt",
        "objective": "regression",
        "metric": ["l1", "l2"],
        "learning_rate": float(cfg["learning_rate"]),
        "seed": int(cfg["seed"]),
        "verbosity": -1,
        "num_threads": 1,
    }


class LightGBMModel:
    """A LightGBM booster, predicting with its best iteration when it stopped early."""

    def __init__(self, booster: Any, best_iteration: int | None) -> None:
        self.booster = booster
        self.best_iteration = best_iteration

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The booster's predictions for every row of `x`."""
        return np.asarray(
            self.booster.predict(np.asarray(x, dtype=np.float64), num_iteration=self.best_iteration)
        )


def fit_lightgbm(
    x: np.ndarray,
    y: np.ndarray,
    cfg: dict[str, Any],
    valid: tuple[np.ndarray, np.ndarray] | None = None,
    early_stopping_rounds: int | None = None,
) -> LightGBMModel:
    """LightGBM on (x, y) for `cfg["num_iterations"]` rounds; with `valid` and `early_stopping_rounds`,
    stopping when a metric (l1 or l2) on `valid` has not improved for that many rounds."""
    lgb = lightgbm_module()
    params = lightgbm_params(cfg)
    train_set = lgb.Dataset(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    kwargs: dict[str, Any] = {}
    if valid is not None and early_stopping_rounds:
        valid_set = lgb.Dataset(
            np.asarray(valid[0], dtype=np.float64),
            np.asarray(valid[1], dtype=np.float64),
            reference=train_set,
        )
        kwargs = {
            "valid_sets": [valid_set],
            "callbacks": [lgb.early_stopping(int(early_stopping_rounds), verbose=False)],
        }
    booster = lgb.train(params, train_set, num_boost_round=int(cfg["num_iterations"]), **kwargs)
    best = booster.best_iteration if kwargs and booster.best_iteration > 0 else None
    return LightGBMModel(booster, best)


def holdout_split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows) of n runs: a seeded random `share` (at least one run) held out."""
    held = min(max(1, int(round(share * n))), n - 1)
    order = np.random.default_rng(int(seed)).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def fit_regressor(x: np.ndarray, y: np.ndarray, regressor: str, lgb_cfg: dict[str, Any]) -> Model:
    """One regressor of a loss `y` on the mixtures `x` (`regmix.regressor`); LightGBM early-stops
    on a held-out share of the runs only when `regmix.lightgbm.early_stopping_rounds` is set."""
    if regressor == "linear":
        return LinearModel.fit(x, y)
    if regressor != "lightgbm":
        raise SkillmixInputError(f"regmix.regressor must be one of {list(REGRESSORS)}, got {regressor!r}")
    rounds = lgb_cfg.get("early_stopping_rounds")
    if not rounds:
        return fit_lightgbm(x, y, lgb_cfg)
    fit_rows, held = holdout_split(len(x), float(lgb_cfg["holdout"]), int(lgb_cfg["seed"]))
    return fit_lightgbm(x[fit_rows], y[fit_rows], lgb_cfg, (x[held], y[held]), int(rounds))


def fit_skills(x: np.ndarray, losses: np.ndarray, regressor: str, lgb_cfg: dict[str, Any]) -> list[Model]:
    """One regressor per column of `losses` (an evaluation skill's loss), all on the mixtures `x`."""
    return [fit_regressor(x, losses[:, j], regressor, lgb_cfg) for j in range(losses.shape[1])]


def predict_skills(models: Sequence[Model], x: np.ndarray, eval_skills: Sequence[str]) -> np.ndarray:
    """Predicted losses (rows of `x` × evaluation skills); a non-finite prediction is an error
    naming the skill."""
    out = np.column_stack([m.predict(x) for m in models]) if len(x) else np.zeros((0, len(models)))
    bad = [s for j, s in enumerate(eval_skills) if not np.all(np.isfinite(out[:, j]))]
    if bad:
        raise FloatingPointError(f"regmix: the regression predicts non-finite losses for skills {bad}")
    return out


def fold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """`folds` disjoint, nearly equal folds of n runs after a seeded shuffle."""
    order = np.random.default_rng(int(seed)).permutation(n)
    return [np.sort(f) for f in np.array_split(order, folds)]


def out_of_fold(
    x: np.ndarray,
    losses: np.ndarray,
    regressor: str,
    lgb_cfg: dict[str, Any],
    seed: int,
    folds: int = FOLDS,
) -> np.ndarray:
    """Out-of-fold predicted losses: each run's losses predicted by models fitted on the other
    folds (K-fold, K = `folds`, seeded)."""
    out = np.empty_like(np.asarray(losses, dtype=np.float64))
    for fold in fold_indices(len(x), folds, seed):
        rest = np.setdiff1d(np.arange(len(x)), fold)
        for j in range(losses.shape[1]):
            out[fold, j] = fit_regressor(x[rest], losses[rest, j], regressor, lgb_cfg).predict(x[fold])
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's ρ (Pearson's r of the average ranks); None when either side is constant."""
    return pearson(pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy())


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson's r; None when either side is constant (or has fewer than 2 values)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    da, db = a - a.mean(), b - b.mean()
    return float((da * db).sum() / np.sqrt((da * da).sum() * (db * db).sum()))
