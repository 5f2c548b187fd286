"""One RegMix proxy run: the configured model, from its initial weights, trained on one sampled
mixture for `regmix.proxy.steps` steps; its validation curve is what the fit learns from.

Liu et al., "RegMix: Data Mixture as Regression for Language Model Pre-training", ICLR 2025
(arXiv 2407.01492); docs/methods/mixers.md#regmix (paragraph "Proxy runs").

The run is a fixed-mixture run of the engine (the base :class:`SkillSampler` on the mixture), with
the `train` block's settings except the steps (`regmix.proxy.steps`) and the learning-rate schedule
(`regmix.proxy.schedule`; RegMix: constant after warm-up). Validation covers every skill, loss only,
before training, every `train.eval_every` steps and after the last step; the last evaluation is the
fit's target.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.regmix_runs import manifest_sizes, read_mixtures, run_skills

log = logging.getLogger(__name__)

CURVE_COLUMNS = ["run", "step", "skill", "loss"]


def proxy_settings(
    train: dict[str, Any], regmix: dict[str, Any], eval_cfg: dict[str, Any], model_cfg: dict[str, Any]
) -> Any:
    """The proxy run's :class:`TrainSettings`: `train`'s, with regmix.proxy's steps and schedule,
    loss-only evaluations and no resume states (a proxy run is short)."""
    from skillmix.engine.training import TrainSettings

    return TrainSettings.from_config(
        {
            **train,
            "steps": int(regmix["proxy"]["steps"]),
            "schedule": regmix["proxy"]["schedule"],
            "eval_score": eval_cfg["score"],
            "parallel": model_cfg["parallel"],
            "eval_accuracy": False,
            "resume_every": 0,
        }
    )


def _check_finite(curve: pd.DataFrame, run: int) -> None:
    """A proxy run whose validation loss is not finite diverged: an error naming the run, skills, step."""
    bad = curve[~np.isfinite(curve["loss"].to_numpy(dtype=np.float64))]
    if len(bad):
        step = int(bad["step"].min())
        skills = sorted(bad.loc[bad["step"] == step, "skill"])
        raise FloatingPointError(
            f"regmix proxy run {run}: validation loss of skills {skills} is not finite at step {step}; "
            "the run diverged (lower train.lr, or change regmix.proxy)"
        )


def regmix_proxy_job(
    manifest: str,
    train: list[str],
    val: list[str],
    mixtures: str,
    run: int,
    *,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    regmix_cfg: dict[str, Any],
    outputs: dict[str, str],
    stamp: dict[str, Any] | None = None,
    source_cfg: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Train the proxy run `run` on its mixture (row `run` of the `mixtures` table) and write its
    validation curve (run, step, skill, loss) to `outputs["curve"]`, with `stamp`; with
    `train.data: fresh` and a synthetic `source_cfg`, on fresh examples as the main run. One
    training skill: no run, an empty curve."""
    from skillmix.engine.sampling import SkillSampler
    from skillmix.engine.training_run import fresh_training_sets, load_run_data
    from skillmix.infra.jobs import JobClock, write_json, write_parquet

    cfg, train_ = complete("regmix", regmix_cfg), complete("train", train_cfg)
    eval_cfg, model_cfg = complete("eval", eval_cfg), complete("model", model_cfg)
    sizes = manifest_sizes(manifest)
    skills, _, _ = run_skills(sizes, train_)
    if len(skills) == 1:
        log.info("regmix: one training skill: no proxy run %s", run)
        empty = pd.DataFrame({"run": [], "step": [], "skill": [], "loss": []}).astype(
            {"run": "int64", "step": "int64", "skill": "object", "loss": "float64"}
        )
        write_parquet(empty, outputs["curve"], stamp=stamp)
        return empty
    table = read_mixtures(mixtures, skills)
    if int(run) not in table.index:
        raise SkillmixInputError(f"{mixtures}: no proxy mixture {run} (it has runs 0 to {len(table) - 1})")
    weights = table.loc[int(run)].to_numpy(dtype=np.float64)
    data = load_run_data(
        model_cfg, skills, list(sizes), train, val, eval_cfg.get("max_examples_per_skill"),
        train_["loss_on"], eval_cfg["eos_in_loss"],
    )  # fmt: skip
    clock = JobClock(data.runtime.device)
    settings = proxy_settings(train_, cfg, eval_cfg, model_cfg)
    sampler = SkillSampler(
        skills, [len(s) for s in data.train_sets], weights, settings.seed, settings.update_steps
    )
    fresh = fresh_training_sets(
        train_["data"], "train.data", source_cfg, skills, data.tokenizer, model_cfg, settings.seed,
        train_["loss_on"],
    )  # fmt: skip
    identity = [model_cfg, train_, eval_cfg, cfg["proxy"], int(run), weights.tolist()]
    result = data.training_run(sampler, settings, fresh, eval_cfg["batch_size"], identity, source_cfg).train()
    curve = result.val_curve[["step", "skill", "loss"]].assign(run=int(run))[CURVE_COLUMNS]
    _check_finite(curve, run)
    write_parquet(curve, outputs["curve"], stamp=stamp)
    if "metrics" in outputs:
        write_json(clock.metrics(run=int(run), steps=settings.steps), outputs["metrics"])
    return curve
