"""RegMix's proxy runs as the fit reads them: each run's mixture and its final validation losses,
from the proxy jobs' curves or from a table of runs made elsewhere (`regmix.proxy_runs`).

Liu et al., "RegMix: Data Mixture as Regression for Language Model Pre-training", ICLR 2025
(arXiv 2407.01492); docs/methods/mixers.md#regmix (paragraph "Proxy runs").
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.strategies import skill_subset

WEIGHT_COLUMN = "weight:{skill}"
"""A proxy-run table's column of a training skill's weight."""
LOSS_COLUMN = "loss:{skill}"
"""A proxy-run table's column of an evaluation skill's final validation loss."""
RUN_COLUMN = "run"
"""A proxy-run table's column of run names (optional; row numbers otherwise)."""
_LISTED = 8


@dataclass
class ProxyRuns:
    """n proxy runs: their names, mixtures (n × k training skills, as given) and final validation
    losses (n × m evaluation skills)."""

    names: list[str]
    skills: list[str]
    eval_skills: list[str]
    weights: np.ndarray
    losses: np.ndarray
    origin: str


def _listed(items: Sequence[str]) -> str:
    """Up to a few items, and how many more."""
    items = list(items)
    more = f" … and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"{items[:_LISTED]}{more}"


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV or Parquet file as a frame (errors name the file)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise SkillmixInputError(f"regmix.proxy_runs: {path} is not a readable table ({exc})") from exc
    raise SkillmixInputError(f"regmix.proxy_runs: {path} must be a .csv or .parquet file")


def _numeric(frame: pd.DataFrame, columns: list[str], path: str) -> np.ndarray:
    """The columns as floats; a column that is not numeric is an error naming it."""
    bad = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise SkillmixInputError(f"regmix.proxy_runs: {path}: columns {_listed(bad)} are not numeric")
    return frame[columns].to_numpy(dtype=np.float64)


def proxy_runs_from_frame(
    frame: pd.DataFrame,
    skills: Sequence[str],
    eval_skills: Sequence[str],
    origin: str,
    *,
    weight_column: str = WEIGHT_COLUMN,
    loss_column: str = LOSS_COLUMN,
    run_column: str = RUN_COLUMN,
) -> ProxyRuns:
    """Proxy runs from a wide table: one weight column per training skill and one loss column per
    evaluation skill, named by `weight_column` and `loss_column` (``{skill}`` is the skill's name),
    and optionally run names in `run_column`. Missing columns are an error naming `origin` and them;
    weights must be finite, >= 0 and not all 0 (used as given, not renormalised)."""
    weights_cols = [weight_column.format(skill=s) for s in skills]
    loss_cols = [loss_column.format(skill=s) for s in eval_skills]
    missing = [c for c in [*weights_cols, *loss_cols] if c not in frame.columns]
    if missing:
        raise SkillmixInputError(
            f"regmix.proxy_runs: {origin} lacks columns {_listed(missing)} (expected one "
            f"{weight_column!r} column per training skill and one {loss_column!r} column per evaluation "
            f"skill; it has {_listed(list(map(str, frame.columns)))})"
        )
    names = (
        [str(v) for v in frame[run_column]]
        if run_column in frame.columns
        else [str(i) for i in range(len(frame))]
    )
    weights = _numeric(frame, weights_cols, origin)
    bad = [n for n, row in zip(names, weights, strict=True) if not np.all(np.isfinite(row)) or np.any(row < 0)
           or row.sum() <= 0]  # fmt: skip
    if bad:
        raise SkillmixInputError(
            f"regmix.proxy_runs: {origin}: runs {_listed(bad)} have weights that are not finite, >= 0 and "
            "not all 0"
        )
    losses = _numeric(frame, loss_cols, origin)
    return ProxyRuns(names, list(skills), list(eval_skills), weights, losses, origin)


def read_proxy_table(
    path: str | os.PathLike,
    skills: Sequence[str],
    eval_skills: Sequence[str],
    *,
    weight_column: str = WEIGHT_COLUMN,
    loss_column: str = LOSS_COLUMN,
    run_column: str = RUN_COLUMN,
) -> ProxyRuns:
    """The proxy runs of a CSV or Parquet table made elsewhere (`regmix.proxy_runs`): columns
    ``weight:<skill>`` for every training skill, ``loss:<skill>`` for every evaluation skill (the
    final validation loss), optionally ``run``; see :func:`proxy_runs_from_frame`."""
    frame = read_table(path)
    return proxy_runs_from_frame(
        frame,
        skills,
        eval_skills,
        str(path),
        weight_column=weight_column,
        loss_column=loss_column,
        run_column=run_column,
    )


def read_mixtures(path: str | os.PathLike, skills: Sequence[str]) -> pd.DataFrame:
    """The proxy mixtures table (run, skill, weight) as runs × `skills` weights; a missing column or
    skill is an error naming the file."""
    frame = pd.read_parquet(path)
    if not {"run", "skill", "weight"} <= set(frame.columns):
        raise SkillmixInputError(f"{path}: expected columns run, skill, weight; has {list(frame.columns)}")
    wide = frame.pivot(index="run", columns="skill", values="weight")
    missing = [s for s in skills if s not in wide.columns]
    if missing and len(wide):
        raise SkillmixInputError(f"{path}: no weights for training skills {_listed(missing)}")
    return wide.reindex(columns=list(skills))


def final_losses(path: str | os.PathLike, eval_skills: Sequence[str], steps: int) -> tuple[int, np.ndarray]:
    """(run, final validation loss of every evaluation skill) of a proxy run's curve (columns run,
    step, skill, loss); a curve that does not end at `steps` (regmix.proxy.steps) or lacks a skill is
    an error naming the file."""
    curve = pd.read_parquet(path)
    if not {"run", "step", "skill", "loss"} <= set(curve.columns) or curve.empty:
        raise SkillmixInputError(f"{path}: not a RegMix proxy curve (columns run, step, skill, loss)")
    last = int(curve["step"].max())
    if last != int(steps):
        raise SkillmixInputError(
            f"{path}: the proxy run ends at step {last}, regmix.proxy.steps is {steps}; "
            "delete it and run again"
        )
    final = curve[curve["step"] == last].drop_duplicates("skill", keep="last").set_index("skill")["loss"]
    missing = [s for s in eval_skills if s not in final.index]
    if missing:
        raise SkillmixInputError(f"{path}: no validation loss for evaluation skills {_listed(missing)}")
    return int(curve["run"].iloc[0]), final.reindex(list(eval_skills)).to_numpy(dtype=np.float64)


def runs_from_curves(
    mixtures_path: str | os.PathLike,
    run_paths: Sequence[str | os.PathLike],
    skills: Sequence[str],
    eval_skills: Sequence[str],
    steps: int,
) -> ProxyRuns:
    """The proxy runs of this workflow: mixtures from the mixtures table, final losses from each
    run's curve; a curve of a run the table does not hold is an error."""
    mixtures = read_mixtures(mixtures_path, skills)
    names, weights, losses = [], [], []
    for path in run_paths:
        run, final = final_losses(path, eval_skills, steps)
        if run not in mixtures.index:
            raise SkillmixInputError(f"{path}: run {run} is not in the proxy mixtures {mixtures_path}")
        names.append(str(run))
        weights.append(mixtures.loc[run].to_numpy(dtype=np.float64))
        losses.append(final)
    k, m = len(skills), len(eval_skills)
    return ProxyRuns(
        names,
        list(skills),
        list(eval_skills),
        np.asarray(weights, dtype=np.float64).reshape(-1, k),
        np.asarray(losses, dtype=np.float64).reshape(-1, m),
        f"{mixtures_path} and {len(run_paths)} proxy runs",
    )


def check_losses(runs: ProxyRuns) -> None:
    """Refuse proxy runs whose final losses are not finite, naming the runs and skills (RegMix drops
    such runs; skillmix does not drop silently)."""
    bad = ~np.isfinite(runs.losses)
    if bad.any():
        rows = [
            f"run {runs.names[i]} ({[runs.eval_skills[j] for j in np.flatnonzero(bad[i])]})"
            for i in np.flatnonzero(bad.any(axis=1))
        ]
        raise SkillmixInputError(
            f"regmix: proxy runs with a non-finite final validation loss, in {runs.origin}: "
            f"{_listed(rows)}; the run diverged: rerun it with other settings (e.g. a lower train.lr) "
            "or remove it from the table"
        )


def run_skills(
    sizes: Mapping[str, int], train_cfg: dict[str, Any]
) -> tuple[list[str], np.ndarray, list[str]]:
    """(training skills, their training examples, evaluation skills) of a run, from the manifest's
    skills with their training examples (`sizes`, manifest order) and the completed `train` block:
    `train.skills` (all by default); `train.target_skills`, else the training skills."""
    names = list(sizes)
    skills = skill_subset(train_cfg.get("skills"), names, "train.skills")
    counts = np.asarray([sizes[s] for s in skills], dtype=np.float64)
    if np.any(counts <= 0):
        raise SkillmixInputError(
            f"training skills without examples: {[s for s, n in zip(skills, counts, strict=True) if n <= 0]}"
        )
    targets = train_cfg.get("target_skills")
    return skills, counts, skill_subset(targets, names, "train.target_skills") if targets else skills


def manifest_sizes(manifest: str) -> dict[str, int]:
    """The manifest's skills and their training examples, in manifest order."""
    from skillmix.data.slicing import read_manifest

    return {s["name"]: int(s["counts"]["train"]) for s in read_manifest(manifest)["skills"]}
