"""RegMix's stage: the proxy mixtures, one proxy run per mixture, and the fit that chooses the
mixture of the `regmix` training run (the jobs of `regmix_mixtures`, `regmix_proxy`, `regmix_fit`).

Liu et al., "RegMix: Data Mixture as Regression for Language Model Pre-training", ICLR 2025
(arXiv 2407.01492); docs/methods/mixers.md#regmix.

The fit regresses each evaluation skill's final proxy loss on the mixture weights
(:mod:`skillmix.mixing.regmix_regression`), checks it by K-fold out-of-fold rank correlation, and
searches Dirichlet candidates around the natural mixture for the lowest predicted objective
(:mod:`skillmix.mixing.regmix_search`): the mean over evaluation skills of the predicted losses, or
one named skill's (`regmix.objective`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.regmix_regression import (
    FOLDS,
    fit_skills,
    out_of_fold,
    pearson,
    predict_skills,
    spearman,
)
from skillmix.mixing.regmix_runs import (
    ProxyRuns,
    check_losses,
    manifest_sizes,
    read_proxy_table,
    run_skills,
    runs_from_curves,
)
from skillmix.mixing.regmix_sampling import natural_prior, sample_mixtures, usage_cap
from skillmix.mixing.regmix_search import search_mixture

log = logging.getLogger(__name__)

LIGHTGBM_MIN_LEAF = 20
"""LightGBM's default fewest rows per leaf (`min_data_in_leaf`), which RegMix keeps."""


@dataclass
class FitResult:
    """A fit of the proxy runs: the chosen mixture, the objective predicted there, each run's observed
    and out-of-fold predicted objective, and the diagnostics."""

    mixture: np.ndarray
    predicted: float
    observed: np.ndarray
    out_of_fold: np.ndarray
    diagnostics: dict[str, Any]


def objective_index(objective: str, eval_skills: Sequence[str]) -> int | None:
    """None for `mean`, else the column of the named evaluation skill (unknown: an error)."""
    if objective == "mean":
        return None
    if objective not in eval_skills:
        raise SkillmixInputError(
            f"regmix.objective: {objective!r} is neither 'mean' nor an evaluation skill; evaluation "
            f"skills (train.target_skills, else the training skills) are {list(eval_skills)}"
        )
    return list(eval_skills).index(objective)


def combine(losses: np.ndarray, index: int | None) -> np.ndarray:
    """The objective of rows of per-skill losses: their mean, or the column `index`."""
    losses = np.asarray(losses, dtype=np.float64)
    return losses.mean(axis=1) if index is None else losses[:, index]


def check_fit_inputs(runs: ProxyRuns, regressor: str) -> None:
    """§6.5's refusals: fewer than 5 runs (the K-fold diagnostic), for `linear` no more runs than
    skills, and non-finite final losses (named by run)."""
    n, k = runs.weights.shape
    if n < FOLDS:
        raise SkillmixInputError(
            f"regmix: the fit needs at least {FOLDS} proxy runs (its {FOLDS}-fold diagnostic); it has {n} "
            f"from {runs.origin} (regmix.runs, or the rows of regmix.proxy_runs)"
        )
    if regressor == "linear" and n <= k:
        raise SkillmixInputError(
            f"regmix.regressor linear: {n} proxy runs for {k} training skills; least squares with an "
            "intercept needs more runs than skills (raise regmix.runs)"
        )
    check_losses(runs)
    if regressor == "lightgbm" and n < 2 * LIGHTGBM_MIN_LEAF:
        raise SkillmixInputError(
            f"regmix.regressor lightgbm: {n} proxy runs from {runs.origin}; a LightGBM tree keeps at least "
            f"{LIGHTGBM_MIN_LEAF} runs in a leaf, so on fewer than {2 * LIGHTGBM_MIN_LEAF} runs it cannot "
            "split and predicts the same loss for every mixture: raise regmix.runs, or set "
            "regmix.regressor: linear"
        )
    if regressor == "lightgbm" and n * (FOLDS - 1) / FOLDS < 2 * LIGHTGBM_MIN_LEAF:
        log.warning(
            "regmix: %d proxy runs; a LightGBM tree needs %d runs per leaf, so fits on fewer than %d runs "
            "(the diagnostic's folds hold %d) cannot split and predict a constant: use more runs or "
            "regmix.regressor linear",
            n, LIGHTGBM_MIN_LEAF, 2 * LIGHTGBM_MIN_LEAF, n * (FOLDS - 1) // FOLDS,
        )  # fmt: skip


def _correlations(observed: np.ndarray, predicted: np.ndarray, eval_skills: Sequence[str]) -> dict[str, Any]:
    """Spearman ρ and Pearson r of out-of-fold predictions, per evaluation skill."""
    return {
        "spearman": {s: spearman(predicted[:, j], observed[:, j]) for j, s in enumerate(eval_skills)},
        "pearson": {s: pearson(predicted[:, j], observed[:, j]) for j, s in enumerate(eval_skills)},
    }


def fit_proxy_runs(runs: ProxyRuns, q: np.ndarray, cfg: dict[str, Any], seed: int) -> FitResult:
    """Fit the proxy runs and search the mixture (`cfg`: the completed `regmix` block; `q`: the
    natural mixture of the training skills; `seed` seeds the folds and the search candidates).

    A skill whose weight is 0 in every proxy run cannot be learned: it is logged and held at 0 in the
    search (its cap is the largest weight the runs saw)."""
    check_fit_inputs(runs, cfg["regressor"])
    index = objective_index(cfg["objective"], runs.eval_skills)
    unlearned = [s for s, w in zip(runs.skills, runs.weights.max(axis=0), strict=True) if w <= 0]
    if unlearned:
        log.warning(
            "regmix: skills %s have weight 0 in every proxy run; the search holds them at 0", unlearned
        )
    models = fit_skills(runs.weights, runs.losses, cfg["regressor"], cfg["lightgbm"])
    oof = out_of_fold(runs.weights, runs.losses, cfg["regressor"], cfg["lightgbm"], seed)
    search = cfg["search"]
    result = search_mixture(
        lambda x: combine(predict_skills(models, x, runs.eval_skills), index),
        q,
        candidates=int(search["candidates"]),
        top_k=int(search["top_k"]),
        concentration=float(search["concentration"]),
        seed=seed,
        cap=usage_cap(q, cfg["sample"]["max_usage"]) if search["search_cap"] else None,
        max_usage=cfg["sample"]["max_usage"],
        active=runs.weights.max(axis=0) > 0,
    )
    predicted = float(combine(predict_skills(models, result.mixture[None, :], runs.eval_skills), index)[0])
    observed, oof_objective = combine(runs.losses, index), combine(oof, index)
    diagnostics = {
        "folds": FOLDS,
        "out_of_fold": {
            "objective": {
                "spearman": spearman(oof_objective, observed),
                "pearson": pearson(oof_objective, observed),
            },
            **_correlations(runs.losses, oof, runs.eval_skills),
        },
        "search": {
            "drawn": result.drawn,
            "accepted": result.accepted,
            "top_k": result.top_k,
            "top_k_mean_objective": result.top_k_objective,
        },
        "unlearned_skills": unlearned,
    }
    return FitResult(result.mixture, predicted, observed, oof_objective, diagnostics)


def sample_seed(regmix_cfg: dict[str, Any], train_cfg: dict[str, Any], block: str) -> int:
    """The seed of `regmix.<block>` (sample or search): its own, else train.seed."""
    seed = regmix_cfg[block].get("seed")
    return int(train_cfg["seed"] if seed is None else seed)


def regmix_mixtures_job(
    manifest: str,
    *,
    regmix_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    outputs: dict[str, str],
    stamp: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """The `regmix_mixtures` job: `regmix.runs` proxy mixtures around the natural mixture of the
    training skills, written to `outputs["mixtures"]` (Parquet: run, skill, weight). One training
    skill: no proxy runs (an empty table; the fit writes the mixture [1])."""
    from skillmix.infra.jobs import write_parquet

    cfg, train = complete("regmix", regmix_cfg), complete("train", train_cfg)
    skills, counts, _ = run_skills(manifest_sizes(manifest), train)
    rows: list[dict[str, Any]] = []
    if len(skills) == 1:
        log.info("regmix: one training skill (%s): no proxy runs, the mixture is [1]", skills[0])
    else:
        mixtures = sample_mixtures(counts, int(cfg["runs"]), cfg["sample"], sample_seed(cfg, train, "sample"))
        rows = [
            {"run": n, "skill": s, "weight": float(w)}
            for n, row in enumerate(mixtures)
            for s, w in zip(skills, row, strict=True)
        ]
    frame = pd.DataFrame(rows, columns=["run", "skill", "weight"]).astype(
        {"run": "int64", "weight": "float64"}
    )
    write_parquet(frame, outputs["mixtures"], stamp=stamp)
    return frame


def mixture_record(
    mixture: np.ndarray, counts: np.ndarray, skills: list[str], train: dict[str, Any]
) -> dict[str, Any]:
    """Weights by skill, the passes over each skill's data they imply in the main run
    (p_i · S · B / n_i), the largest weight and the entropy."""
    budget = int(train["steps"]) * int(train["batch_size"])
    nz = mixture[mixture > 0]
    return {
        "weights": {s: float(w) for s, w in zip(skills, mixture, strict=True)},
        "passes": {s: float(w * budget / n) for s, w, n in zip(skills, mixture, counts, strict=True)},
        "max_weight": float(mixture.max()),
        "entropy": float(-(nz * np.log(nz)).sum()),
    }


def regmix_fit_job(
    mixtures: str | None,
    runs: Sequence[str],
    *,
    regmix_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    skills: Mapping[str, int],
    outputs: dict[str, str],
    proxy_table: str | None = None,
) -> dict[str, Any]:
    """The `regmix_fit` job: fit the proxy runs (the curves `runs` with their `mixtures`, or the table
    `proxy_table`, default `regmix.proxy_runs`) and search the mixture. `skills` maps every skill of
    the manifest to its training examples (manifest order; the natural mixture and the passes come
    from it). Writes `outputs["mixture"]` (JSON: weights by skill, predicted objective, diagnostics,
    the stamp of the runs) and `outputs["fit"]` (Parquet: run, observed, predicted: the out-of-fold
    predicted objective). One training skill: the mixture [1], no fit."""
    from skillmix.infra.jobs import write_json, write_parquet
    from skillmix.infra.stamps import read_stamp

    if not isinstance(skills, Mapping):
        raise TypeError("regmix_fit_job: skills maps each skill of the manifest to its training examples")
    cfg, train = complete("regmix", regmix_cfg), complete("train", train_cfg)
    names, counts, eval_skills = run_skills(skills, train)
    table = proxy_table or cfg["proxy_runs"]
    record: dict[str, Any] = {"regressor": cfg["regressor"], "objective": cfg["objective"]}
    fit = pd.DataFrame({"run": pd.Series([], dtype=str), "observed": [], "predicted": []})
    if len(names) == 1:
        record.update(mixture_record(np.ones(1), counts, names, train), predicted_objective=None, runs=0)
        record["note"] = "one training skill: the mixture is [1]; no proxy runs, no fit"
    else:
        if table:
            data = read_proxy_table(table, names, eval_skills)
            record["source"] = {"table": str(table)}
        else:
            if mixtures is None:
                raise SkillmixInputError("regmix_fit: needs the proxy mixtures table or regmix.proxy_runs")
            data = runs_from_curves(mixtures, runs, names, eval_skills, int(cfg["proxy"]["steps"]))
            record["source"] = {"mixtures": str(mixtures), "runs": len(runs)}
            record["stamp"] = read_stamp(runs[0]) if runs else None
        result = fit_proxy_runs(data, natural_prior(counts), cfg, sample_seed(cfg, train, "search"))
        record.update(mixture_record(result.mixture, counts, names, train), runs=len(data.names))
        record.update(predicted_objective=result.predicted, diagnostics=result.diagnostics)
        fit = pd.DataFrame({"run": data.names, "observed": result.observed, "predicted": result.out_of_fold})
    if record.get("predicted_objective") is not None and not math.isfinite(record["predicted_objective"]):
        raise FloatingPointError("regmix: the predicted objective at the chosen mixture is not finite")
    write_parquet(fit, outputs["fit"])
    write_json(record, outputs["mixture"])
    return record
