"""Learned skills graphs: the losses of each unit, and assembly from them (Skill-It Alg. 2 and 3).

The options (``graph.assemble``) and their post-processing are in :mod:`skillmix.graph.options`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skillmix.data.slicing import read_manifest
from skillmix.graph.options import GraphOptions, postprocess
from skillmix.graph.store import CURVE_COLUMNS, REPEAT_COLUMN
from skillmix.graph.units import LEARNED_FROM_RUNS, check_method, graph_units, named, pair_unit
from skillmix.graph.writing import write_graph
from skillmix.infra.errors import SkillmixInputError

# --------------------------------------------------------------------------------------------
# Losses of one unit


def _check_curve(curve: pd.DataFrame, unit: str) -> None:
    if not isinstance(curve, pd.DataFrame):
        raise SkillmixInputError(
            f"graph unit {unit!r}: expected a DataFrame curve, got {type(curve).__name__}"
        )
    missing = [column for column in CURVE_COLUMNS if column not in curve.columns]
    if missing:
        raise SkillmixInputError(
            f"graph unit {unit!r}: curve lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(CURVE_COLUMNS)}"
        )


def _skill_rows(curve: pd.DataFrame, skill: str, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (steps, losses) of one skill in one unit's curve, sorted by step, checked."""
    rows = curve[curve["skill"] == skill]
    if rows.empty:
        raise SkillmixInputError(f"graph unit {unit!r}: curve has no loss for skill {skill!r}")
    steps = rows["step"].to_numpy()
    losses = rows["loss"].to_numpy(dtype=float)
    order = np.argsort(steps, kind="stable")
    steps, losses = steps[order], losses[order]
    if len(np.unique(steps)) != len(steps):
        raise SkillmixInputError(f"graph unit {unit!r}: skill {skill!r} has more than one loss at some step")
    return steps, losses


def _finite(value: float, unit: str, skill: str, what: str) -> float:
    if not math.isfinite(value):
        raise SkillmixInputError(
            f"graph unit {unit!r}: {what} loss of skill {skill!r} is {value}, not finite"
        )
    return float(value)


def _measure(steps: np.ndarray, losses: np.ndarray, options: GraphOptions, unit: str, skill: str) -> float:
    after = steps > 0
    if not after.any():
        raise SkillmixInputError(f"graph unit {unit!r}: skill {skill!r} has no evaluation after step 0")
    if options.measure == "end":
        return _finite(losses[-1], unit, skill, f"step-{int(steps[-1])}")
    tail = losses[after]
    if len(tail) < options.window:
        raise SkillmixInputError(
            f"graph unit {unit!r}: skill {skill!r} has {len(tail)} evaluation(s) after step 0, "
            f"graph.assemble.window needs {options.window}; lower graph.assemble.window or evaluate "
            "more often"
        )
    values = tail[-options.window :]
    for value in values:
        _finite(value, unit, skill, "windowed")
    return float(values.mean())


def _initial(steps: np.ndarray, losses: np.ndarray, unit: str, skill: str) -> float:
    at_zero = losses[steps == 0]
    if len(at_zero) == 0:
        raise SkillmixInputError(f"graph unit {unit!r}: skill {skill!r} has no step-0 (initial) loss")
    return _finite(at_zero[0], unit, skill, "step-0")


class UnitCurve:
    """The losses of one unit: its curve grouped by skill (and repeat) once, for repeated look-ups.

    Its ``repeat`` column tells the unit's runs apart: its losses are the mean over repeats at
    each evaluated step, its steps to a target the earliest over repeats.
    """

    def __init__(self, unit: str, curve: pd.DataFrame, options: GraphOptions) -> None:
        _check_curve(curve, unit)
        if REPEAT_COLUMN not in curve.columns:  # a single run, repeat 0
            curve = curve.assign(**{REPEAT_COLUMN: 0})
        names = sorted({str(name) for name in curve["unit"].unique()})
        if names != [unit]:
            raise SkillmixInputError(
                f"graph unit {unit!r}: its curve's unit column holds {named(names)}, expected only {unit!r}"
            )
        self.unit = unit
        self.curve = curve  # with its repeat column
        self.options = options
        self.groups = {skill: rows for skill, rows in curve.groupby("skill", sort=False)}
        self._runs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def _repeats(self, skill: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(steps, losses) of every repeat of the skill, checked once and kept."""
        if skill in self._runs:
            return self._runs[skill]
        if skill not in self.groups:
            raise SkillmixInputError(f"graph unit {self.unit!r}: curve has no loss for skill {skill!r}")
        runs = [
            _skill_rows(rows, skill, self.unit)
            for _, rows in self.groups[skill].groupby(REPEAT_COLUMN, sort=True)
        ]
        if any(not np.array_equal(steps, runs[0][0]) for steps, _ in runs[1:]):
            raise SkillmixInputError(
                f"graph unit {self.unit!r}: the repeats of skill {skill!r} were evaluated at different steps"
            )
        self._runs[skill] = runs
        return runs

    def _rows(self, skill: str) -> tuple[np.ndarray, np.ndarray]:
        runs = self._repeats(skill)
        return runs[0][0], np.mean([losses for _, losses in runs], axis=0)

    def after(self, skill: str) -> float:
        """The after-training loss of the skill (`graph.assemble.measure` end or window)."""
        return _measure(*self._rows(skill), self.options, self.unit, skill)

    def before(self, skill: str) -> float:
        """The step-0 (before training) loss of the skill."""
        return _initial(*self._rows(skill), self.unit, skill)

    def lowers(self, skill: str) -> bool:
        """Whether the skill's loss at the unit's last evaluation is below its step-0 loss (both
        the mean over repeats)."""
        steps, losses = self._rows(skill)
        last = _finite(losses[-1], self.unit, skill, f"step-{int(steps[-1])}")
        return last < self.before(skill)

    def steps_to(self, skill: str, target: float) -> float:
        """The first evaluated step at which the skill's loss is <= target in any repeat (inf if never)."""
        firsts = [steps[losses <= target] for steps, losses in self._repeats(skill)]
        reached = [float(hits.min()) for hits in firsts if len(hits)]
        return min(reached) if reached else math.inf


def _relative(delta: float, reference: float, unit: str, skill: str) -> float:
    if reference <= 0:
        raise SkillmixInputError(
            f"graph unit {unit!r}: graph.assemble.normalise 'relative' divides by the loss of skill "
            f"{skill!r}, "
            f"which is {reference}; expected a positive loss (use graph.assemble.normalise: raw)"
        )
    return delta / reference


# --------------------------------------------------------------------------------------------
# Assembly


def _checked_skills(method: str, skills: list[str], slugs: list[str]) -> tuple[list[str], list[str]]:
    """The skills and their slugs as lists, after checking that `method` learns from runs and the
    names are usable (as many slugs as skills, no name twice, at least one)."""
    check_method(method)
    if method not in LEARNED_FROM_RUNS:
        how = "read with load_given" if method == "given" else "computed by skillmix.graph.gradient"
        raise SkillmixInputError(f"graph.method {method!r}: the graph is {how}, not assembled from runs")
    skills, slugs = list(skills), list(slugs)
    if len(skills) != len(slugs):
        raise SkillmixInputError(f"graph skills: {len(skills)} skill names but {len(slugs)} slugs")
    if len(set(skills)) != len(skills):
        raise SkillmixInputError("graph skills: a skill name appears more than once")
    if not skills:
        raise SkillmixInputError("graph skills: expected at least one skill")
    return skills, slugs


def _method_units(method: str, slugs: list[str], curves: dict[str, pd.DataFrame]) -> list[str]:
    """The units `method` needs (:func:`graph_units` order), each of which must have a curve."""
    units = graph_units(method, slugs)
    missing = [unit for unit in units if unit not in curves]
    if missing:
        raise SkillmixInputError(
            f"graph.method {method!r}: missing curve(s) for unit(s) {named(missing)} "
            f"({len(missing)} of {len(units)} units)"
        )
    return units


def _steps_to_target_graph(
    loaded: dict[str, UnitCurve], skills: list[str], slugs: list[str], target: float, direct: bool = False
) -> np.ndarray:
    """Brute force with ``measure: steps_to_target``: 1 where the pair reaches `target` on the
    evaluated skill sooner than that skill alone (or, with `direct`, where the run on the source
    alone lowers the evaluated skill's loss), else 0; diagonal 1."""
    k = len(skills)
    A = np.zeros((k, k), dtype=np.float64)
    alone_steps = [loaded[slug].steps_to(skill, target) for slug, skill in zip(slugs, skills, strict=True)]
    np.fill_diagonal(A, 1.0)
    for i in range(k):
        for j in range(i + 1, k):
            pair = loaded[pair_unit(slugs[i], slugs[j])]
            for source, target_skill in ((i, j), (j, i)):
                sooner = pair.steps_to(skills[target_skill], target) < alone_steps[target_skill]
                lowered = direct and loaded[slugs[source]].lowers(skills[target_skill])
                A[source, target_skill] = 1.0 if sooner or lowered else 0.0
    return A


def _linear_deltas(
    loaded: dict[str, UnitCurve], skills: list[str], slugs: list[str], relative: bool
) -> np.ndarray:
    """Linear: ``delta[i, j] = L_j(before) - L_j(after training on i)``, both from unit ``slug_i``."""
    k = len(skills)
    A = np.zeros((k, k), dtype=np.float64)
    for i, slug in enumerate(slugs):
        run = loaded[slug]
        for j, skill in enumerate(skills):
            before = run.before(skill)
            delta = before - run.after(skill)
            A[i, j] = _relative(delta, before, slug, skill) if relative else delta
    return A


def _brute_force_deltas(
    loaded: dict[str, UnitCurve], skills: list[str], slugs: list[str], relative: bool
) -> np.ndarray:
    """Brute force: off-diagonal ``L_j(after j alone) - L_j(after the i, j mix)``, diagonal
    ``L_j(before) - L_j(after j alone)``."""
    k = len(skills)
    A = np.zeros((k, k), dtype=np.float64)
    alone = [loaded[slug].after(skill) for slug, skill in zip(slugs, skills, strict=True)]
    for j, (slug, skill) in enumerate(zip(slugs, skills, strict=True)):
        before = loaded[slug].before(skill)
        delta = before - alone[j]
        A[j, j] = _relative(delta, before, slug, skill) if relative else delta
    for i in range(k):
        for j in range(i + 1, k):
            pair = loaded[pair_unit(slugs[i], slugs[j])]
            for source, target in ((i, j), (j, i)):
                delta = alone[target] - pair.after(skills[target])
                if relative:
                    delta = _relative(delta, alone[target], slugs[target], skills[target])
                A[source, target] = delta
    return A


def _raw_curves(loaded: dict[str, UnitCurve], units: list[str], repeated: bool) -> pd.DataFrame:
    """The curves of `units` concatenated in that order (with the repeat column when any has one)."""
    columns = list(CURVE_COLUMNS)
    if repeated:
        columns.insert(1, REPEAT_COLUMN)
    raw = pd.concat([loaded[unit].curve.loc[:, columns] for unit in units], ignore_index=True)
    dtypes = {"unit": str, REPEAT_COLUMN: "int64", "step": "int64", "skill": str, "loss": "float64"}
    return raw.astype({column: dtypes[column] for column in columns})


def assemble(
    method: str,
    skills: list[str],
    slugs: list[str],
    curves: dict[str, pd.DataFrame],
    options: GraphOptions,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Compute a learned skills graph from the units' curves.

    Returns ``(A, raw)``: ``A`` is k x k float64 with rows and columns in the order of ``skills``;
    ``raw`` is the curves of the units used (in :func:`graph_units` order) concatenated, with
    columns unit, step, skill, loss. Curves are keyed by unit name; extra keys are ignored.

    - linear: ``delta[i, j] = L_j(before) - L_j(after training on i)``, both from unit ``slug_i``;
      relative: divided by ``L_j(before)``.
    - brute_force: off-diagonal ``delta[i, j] = L_j(after j alone) - L_j(after the i, j mix)``,
      relative: divided by ``L_j(after j alone)``; diagonal ``delta[j, j] = L_j(before) -
      L_j(after j alone)`` (unit ``slug_j``), relative: divided by ``L_j(before)``.

    - brute_force with ``measure: steps_to_target`` (Skill-It's LEGO/Addition rule):
      ``A[i, j] = 1`` when the i, j mix reaches ``target_loss`` on j at an earlier evaluation
      than j alone (a run that never reaches it counts as infinitely late), else 0; diagonal 1.
      With ``direct_edges``, also 1 when the run on i alone ends with a lower L_j than at step 0
      (the rule's second clause). ``binary_edge_weight`` then sets the edge weight (the paper's 0.5).

    A unit run several times (a ``repeat`` column, ``graph.runs.repeats``) counts with the mean of
    its repeats' losses at each step, and with its earliest step to the target over repeats.

    Then ``clip_negative``, ``threshold``, ``binary_edge_weight`` and ``diagonal`` (see
    :class:`GraphOptions`), in that order.
    """
    skills, slugs = _checked_skills(method, skills, slugs)
    units = _method_units(method, slugs, curves)
    repeated = any(REPEAT_COLUMN in curves[unit].columns for unit in units)
    loaded = {unit: UnitCurve(unit, curves[unit], options) for unit in units}
    relative = options.normalise == "relative"
    if options.measure == "steps_to_target":
        if method != "brute_force":
            raise SkillmixInputError(
                "graph.assemble.measure steps_to_target compares a pair run with a single run: "
                f"it needs graph.method brute_force, got {method!r}"
            )
        A = _steps_to_target_graph(loaded, skills, slugs, options.target_loss, options.direct_edges)
    elif method == "linear":
        A = _linear_deltas(loaded, skills, slugs, relative)
    else:  # brute_force
        A = _brute_force_deltas(loaded, skills, slugs, relative)
    if not np.isfinite(A).all():  # pragma: no cover - every input value was checked finite
        raise SkillmixInputError(f"graph.method {method!r}: the assembled graph has non-finite entries")
    return postprocess(A, options), _raw_curves(loaded, units, repeated)


# --------------------------------------------------------------------------------------------
# The assembly job


def assemble_from_files(
    method: str,
    curve_paths: list[str | os.PathLike],
    manifest_path: str | os.PathLike,
    options: dict[str, Any],
    adjacency_path: str | os.PathLike,
) -> np.ndarray:
    """Assemble a learned graph from its runs' curve files and write it beside `adjacency_path`."""
    manifest = read_manifest(manifest_path)
    skills = [s["name"] for s in manifest["skills"]]
    slugs = [s["slug"] for s in manifest["skills"]]
    curves = {}
    for path in curve_paths:
        curve = pd.read_parquet(path)
        curves[str(curve["unit"].iloc[0])] = curve
    opts = GraphOptions.from_config(options)
    A, raw = assemble(method, skills, slugs, curves, opts)
    write_graph(Path(adjacency_path).parent, A, skills, skills, raw, method, opts.to_dict())
    return A
