"""The training runs of one graph unit (the graph_run job; the units are named in ``units``): one
skill or an equal pair, trained from the initial model, with every skill's loss recorded as its curve.

A unit may be trained several times (`graph.runs.repeats`), each time with another batch order
(and other fresh examples), from the same initial model or, with `graph.runs.repeat_init: new`, from
a tiny model initialised with the repeat's own seed; its curve then has a `repeat` column.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skillmix.data.slicing import read_manifest
from skillmix.engine.modeling import load_model
from skillmix.engine.sampling import SkillSampler
from skillmix.engine.training import TrainSettings
from skillmix.engine.training_run import RunData, TrainingRun, fresh_training_sets, load_run_data
from skillmix.graph.units import unit_slugs
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)

REPEAT_SEED_STRIDE = 1_000_003
"""Seed distance between two repeats of a unit (far from the small seeds a benchmark sweeps)."""


def repeat_seed(seed: int, repeat: int) -> int:
    """The training seed (batch order, fresh examples) of repeat `repeat` of a graph unit."""
    return int(seed) + int(repeat) * REPEAT_SEED_STRIDE


def repeat_model(model_cfg: dict[str, Any], runs_cfg: dict[str, Any], repeat: int) -> dict[str, Any]:
    """The `model` block repeat `repeat` of a graph unit starts from: the configured model, or with
    `graph.runs.repeat_init: new` a model built from config (`model.kind: tiny`) initialised with
    seed `repeat_seed(model.seed, repeat)` (repeat 0 keeps `model.seed`). A pretrained model has
    one initialisation, its weights, so every repeat starts from them (logged)."""
    if runs_cfg["repeat_init"] == "same" or repeat == 0:
        return model_cfg
    kind = complete("model", model_cfg)["kind"]
    if kind != "tiny":
        log.info(
            "graph.runs.repeat_init new: model.kind %s has one initialisation; repeat %d starts from it",
            kind,
            repeat,
        )
        return model_cfg
    return {**model_cfg, "seed": repeat_seed(model_cfg["seed"], repeat)}


def graph_unit_curve(
    unit: str,
    manifest_path: str | os.PathLike,
    train_paths: Sequence[str | os.PathLike],
    val_dir: str | os.PathLike,
    *,
    model_cfg: dict[str, Any],
    runs_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    source_cfg: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Train on the unit's skills (equal mix) from the initial model, `graph.runs.repeats` times,
    and return its curve: columns unit, repeat, step, skill, loss.

    Every skill's validation loss is measured (loss only, no generation) before training,
    every `eval_every` steps and at the end, from the slices in `val_dir` (one
    `{slug}.parquet` per skill of the manifest: the folder is the job's one input, which keeps
    the DAG of thousands of pair runs small). With `graph.runs.data: fresh` (a synthetic
    `source_cfg`) it trains on new examples instead of the unit's training slices
    (:mod:`skillmix.engine.fresh`). The slices are read and encoded once; each repeat starts from a newly
    loaded initial model and draws its batches (and fresh examples) with :func:`repeat_seed`.
    """
    eval_cfg = complete("eval", eval_cfg)
    runs_cfg = complete("graph.runs", runs_cfg)
    manifest = read_manifest(manifest_path)
    val_paths = [Path(val_dir) / f"{s['slug']}.parquet" for s in manifest["skills"]]
    by_slug = {s["slug"]: s["name"] for s in manifest["skills"]}
    skills = [s["name"] for s in manifest["skills"]]
    unknown = [slug for slug in unit_slugs(unit) if slug not in by_slug]
    if unknown:
        raise SkillmixInputError(f"graph unit {unit!r}: no skill with slug {unknown} in {manifest_path}")
    unit_skills = [by_slug[slug] for slug in unit_slugs(unit)]
    data = load_run_data(
        model_cfg,
        unit_skills,
        skills,
        train_paths,
        val_paths,
        runs_cfg.get("eval_examples"),
        val_eos=eval_cfg["eos_in_loss"],
    )
    curves = []
    for repeat in range(runs_cfg["repeats"]):
        start = repeat_model(model_cfg, runs_cfg, repeat)
        if repeat:  # training changed the model in place: start again from an initial one
            data = dataclasses.replace(data, model=load_model(start)[0])
        run = _unit_run(data, unit, unit_skills, start, runs_cfg, eval_cfg, source_cfg, repeat)
        curve = run.train().val_curve[["step", "skill", "loss"]]
        curves.append(curve.assign(unit=unit, repeat=repeat))
    return pd.concat(curves, ignore_index=True)[["unit", "repeat", "step", "skill", "loss"]]


def _unit_run(
    data: RunData,
    unit: str,
    unit_skills: list[str],
    model_cfg: dict[str, Any],
    runs_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    source_cfg: dict[str, Any] | None,
    repeat: int,
) -> TrainingRun:
    """Repeat `repeat` of a unit: an equal mix of its skills, batches drawn with its own seed."""
    settings = TrainSettings.from_config(
        {
            **runs_cfg,
            "seed": repeat_seed(runs_cfg["seed"], repeat),
            "eval_accuracy": False,
            "resume_every": 0,
        }
    )
    sampler = SkillSampler(
        unit_skills,
        [len(s) for s in data.train_sets],
        np.ones(len(unit_skills)),
        settings.seed,
        settings.steps,
    )
    fresh = fresh_training_sets(
        runs_cfg["data"],
        "graph.runs.data",
        source_cfg,
        unit_skills,
        data.tokenizer,
        model_cfg,
        settings.seed,
    )
    identity = [model_cfg, runs_cfg, unit, repeat]
    return data.training_run(sampler, settings, fresh, eval_cfg["batch_size"], identity, source_cfg)


def graph_run_job(
    units: list[str],
    manifest: str,
    train: list[str],
    val: str,
    outputs: list[str],
    *,
    model_cfg: dict[str, Any],
    runs_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    source_cfg: dict[str, Any] | None,
    stamp: dict[str, Any],
) -> None:
    """The graph_run job: each unit's curve (:func:`graph_unit_curve`) written to its output, the
    units one after the other. `train` holds the training slices of every unit (named by slug),
    `val` is the folder of validation slices."""
    from skillmix.infra.jobs import write_parquet

    train_by_slug = {Path(path).stem: path for path in train}
    for unit, out in zip(units, outputs, strict=True):
        curve = graph_unit_curve(
            unit,
            manifest,
            [train_by_slug[slug] for slug in unit_slugs(unit)],
            val,
            model_cfg=model_cfg,
            runs_cfg=runs_cfg,
            eval_cfg=eval_cfg,
            source_cfg=source_cfg,
        )
        write_parquet(curve, out, stamp=stamp)
        log.info("unit %s: %d rows", unit, len(curve))
