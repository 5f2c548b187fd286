"""Learned skills graphs: options, the losses of each unit, and assembly (Skill-It Alg. 2 and 3)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skillmix.data.slicing import read_manifest
from skillmix.graph.store import CURVE_COLUMNS, REPEAT_COLUMN, write_graph
from skillmix.graph.units import LEARNED_FROM_RUNS, check_method, graph_units, named, pair_unit
from skillmix.infra.errors import SkillmixInputError

MEASURES = ("end", "window", "steps_to_target")
NORMALISATIONS = ("raw", "relative")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


@dataclass
class GraphOptions:
    """How a learned graph is computed from the units' loss curves.

    Applied in this order after the deltas are measured: ``normalise``, ``clip_negative``,
    ``threshold``, ``binary_edge_weight``, ``diagonal``.
    """

    measure: str = "end"
    """``end``: loss at the unit's last step; ``window``: mean of the last ``window`` evaluations
    after step 0."""
    window: int = 2
    """Number of evaluations averaged by ``measure: window``."""
    normalise: str = "raw"
    """``raw``: loss decrease; ``relative``: loss decrease divided by the reference loss."""
    clip_negative: bool = False
    """Set negative entries (diagonal included) to 0."""
    threshold: float | None = None
    """Set off-diagonal entries <= threshold to 0."""
    binary_edge_weight: float | None = None
    """If set: off-diagonal entries > 0 become this weight, the other off-diagonal entries 0."""
    diagonal: float | str = "measured"
    """``measured`` keeps the measured diagonal; a number replaces it."""
    target_loss: float = 0.01
    """``measure: steps_to_target``: the validation loss a run must reach on a skill."""

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise SkillmixInputError(
                f"graph.assemble.measure: got {self.measure!r}, expected one of {', '.join(MEASURES)}"
            )
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise SkillmixInputError(f"graph.assemble.window: got {self.window!r}, expected an integer >= 1")
        if not _is_number(self.target_loss) or float(self.target_loss) <= 0:
            raise SkillmixInputError(
                f"graph.assemble.target_loss: got {self.target_loss!r}, expected a finite number > 0"
            )
        self.target_loss = float(self.target_loss)
        if self.normalise not in NORMALISATIONS:
            raise SkillmixInputError(
                f"graph.assemble.normalise: got {self.normalise!r}, "
                f"expected one of {', '.join(NORMALISATIONS)}"
            )
        if not isinstance(self.clip_negative, bool):
            raise SkillmixInputError(
                f"graph.assemble.clip_negative: got {self.clip_negative!r}, expected true or false"
            )
        if self.threshold is not None:
            if not _is_number(self.threshold):
                raise SkillmixInputError(
                    f"graph.assemble.threshold: got {self.threshold!r}, expected a finite number or null"
                )
            self.threshold = float(self.threshold)
        if self.binary_edge_weight is not None:
            if not _is_number(self.binary_edge_weight) or float(self.binary_edge_weight) <= 0:
                raise SkillmixInputError(
                    f"graph.assemble.binary_edge_weight: got {self.binary_edge_weight!r}, "
                    "expected a finite number > 0 or null"
                )
            self.binary_edge_weight = float(self.binary_edge_weight)
        if self.diagonal != "measured":
            if not _is_number(self.diagonal):
                raise SkillmixInputError(
                    f"graph.assemble.diagonal: got {self.diagonal!r}, expected 'measured' or a finite number"
                )
            self.diagonal = float(self.diagonal)

    @classmethod
    def from_config(cls, cfg: dict | None) -> GraphOptions:
        """Build options from a ``graph`` config section; unrelated keys are ignored, values checked."""
        if cfg is None:
            return cls()
        if not isinstance(cfg, dict):
            raise SkillmixInputError(f"graph: expected a mapping of options, got {type(cfg).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in cfg.items() if key in names})

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a plain dict (for graph.json)."""
        return dataclasses.asdict(self)


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


def postprocess(A: np.ndarray, options: GraphOptions) -> np.ndarray:
    """Apply clip_negative, threshold, binary_edge_weight and diagonal, in that order."""
    A = A.copy()
    off = ~np.eye(A.shape[0], A.shape[1], dtype=bool)
    if options.clip_negative:
        A[A < 0] = 0.0
    if options.threshold is not None:
        A[off & (A <= options.threshold)] = 0.0
    if options.binary_edge_weight is not None:
        edges = off & (A > 0)
        A[off] = 0.0
        A[edges] = options.binary_edge_weight
    if options.diagonal != "measured":
        np.fill_diagonal(A, float(options.diagonal))
    return A


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
      ``binary_edge_weight`` then sets the edge weight (the paper's 0.5).

    A unit run several times (a ``repeat`` column, ``graph.runs.repeats``) counts with the mean of
    its repeats' losses at each step, and with its earliest step to the target over repeats.

    Then ``clip_negative``, ``threshold``, ``binary_edge_weight`` and ``diagonal`` (see
    :class:`GraphOptions`), in that order.
    """
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
    units = graph_units(method, slugs)
    missing = [unit for unit in units if unit not in curves]
    if missing:
        raise SkillmixInputError(
            f"graph.method {method!r}: missing curve(s) for unit(s) {named(missing)} "
            f"({len(missing)} of {len(units)} units)"
        )
    repeated = any(REPEAT_COLUMN in curves[unit].columns for unit in units)
    loaded = {unit: UnitCurve(unit, curves[unit], options) for unit in units}
    relative = options.normalise == "relative"
    k = len(skills)
    A = np.zeros((k, k), dtype=np.float64)

    if options.measure == "steps_to_target":
        if method != "brute_force":
            raise SkillmixInputError(
                "graph.assemble.measure steps_to_target compares a pair run with a single run: "
                f"it needs graph.method brute_force, got {method!r}"
            )
        target = options.target_loss
        alone_steps = [
            loaded[slug].steps_to(skill, target) for slug, skill in zip(slugs, skills, strict=True)
        ]
        np.fill_diagonal(A, 1.0)
        for i in range(k):
            for j in range(i + 1, k):
                pair = loaded[pair_unit(slugs[i], slugs[j])]
                for source, target_skill in ((i, j), (j, i)):
                    sooner = pair.steps_to(skills[target_skill], target) < alone_steps[target_skill]
                    A[source, target_skill] = 1.0 if sooner else 0.0
    elif method == "linear":
        for i, slug in enumerate(slugs):
            run = loaded[slug]
            for j, skill in enumerate(skills):
                before = run.before(skill)
                delta = before - run.after(skill)
                A[i, j] = _relative(delta, before, slug, skill) if relative else delta
    else:  # brute_force
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

    if not np.isfinite(A).all():  # pragma: no cover - every input value was checked finite
        raise SkillmixInputError(f"graph.method {method!r}: the assembled graph has non-finite entries")
    A = postprocess(A, options)
    columns = list(CURVE_COLUMNS)
    if repeated:
        columns.insert(1, REPEAT_COLUMN)
    raw = pd.concat([loaded[unit].curve.loc[:, columns] for unit in units], ignore_index=True)
    dtypes = {"unit": str, REPEAT_COLUMN: "int64", "step": "int64", "skill": str, "loss": "float64"}
    raw = raw.astype({column: dtypes[column] for column in columns})
    return A, raw


# --------------------------------------------------------------------------------------------
# Given graphs


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
