"""Skills graphs (Skill-It §2–§3): learn one from short training runs, or load a published one.

A skills graph ``A`` has one row per training skill (source) and one column per evaluation skill
(target); ``A[i, j]`` is how much training on skill ``i`` lowers the validation loss of skill ``j``
(signed: positive helps, negative interferes).

A graph is learned from short training runs, "units", each of which records the validation loss of
every skill over its steps (a curve: columns ``unit``, ``step``, ``skill``, ``loss``; step 0 is the
initial model). Units are named by skill slugs: ``slug_i`` trains on skill ``i`` alone and
``slug_i__slug_j`` (``i`` before ``j`` in skill order) on an equal mix of ``i`` and ``j``.

- ``brute_force`` (Alg. 2): k single runs and k(k-1)/2 pair runs.
- ``linear`` (Alg. 3): k single runs.
- ``gradient`` (entk.md §8): inner products of mean skill gradients at existing checkpoints, no
  runs (``skillmix.gradient_graph``).
- ``given``: a ``.npy`` matrix with its skill order; values are used exactly as stored (a user's
  graph is never rescaled; scaling a binary graph is the explicit ``binary_edge_weight`` option of
  learned graphs only).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from skillmix.errors import SkillmixInputError  # noqa: E402
from skillmix.jobs import atomic_file, write_json, write_parquet  # noqa: E402
from skillmix.slicing import SLUG_PATTERN  # noqa: E402

METHODS = ("brute_force", "linear", "gradient", "given")
LEARNED_FROM_RUNS = ("brute_force", "linear")
PAIR_SEPARATOR = "__"
UNIT_PATTERN = rf"{SLUG_PATTERN}(?:{PAIR_SEPARATOR}{SLUG_PATTERN})?"
"""Regex for a unit name: ``SLUG`` or ``SLUG__SLUG`` (no capturing groups; for wildcard_constraints)."""

CURVE_COLUMNS = ("unit", "step", "skill", "loss")
MEASURES = ("end", "window", "steps_to_target")
NORMALISATIONS = ("raw", "relative")

ADJACENCY_FILE = "adjacency.npy"
SKILLS_FILE = "skills.json"
RAW_FILE = "raw.parquet"
HEATMAP_FILE = "heatmap.png"
META_FILE = "graph.json"

_SLUG_RE = re.compile(SLUG_PATTERN)
_UNIT_RE = re.compile(UNIT_PATTERN)
_MAX_NAMED = 8  # names listed in an error message
_ANNOTATE_MAX = 20  # annotate heatmap cells up to this many rows/columns


def _named(values: list[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:_MAX_NAMED])
    more = len(values) - _MAX_NAMED
    return f"{shown} (and {more} more)" if more > 0 else shown


# --------------------------------------------------------------------------------------------
# Units


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise SkillmixInputError(f"graph.method: got {method!r}, expected one of {', '.join(METHODS)}")


def _check_slugs(slugs: list[str]) -> None:
    for slug in slugs:
        if not isinstance(slug, str) or not _SLUG_RE.fullmatch(slug) or PAIR_SEPARATOR in slug:
            raise SkillmixInputError(
                f"skill slug {slug!r}: expected a string matching {SLUG_PATTERN} without '__'"
            )
    seen: set[str] = set()
    duplicates = sorted({slug for slug in slugs if slug in seen or seen.add(slug)})
    if duplicates:
        raise SkillmixInputError(f"skill slugs: {_named(duplicates)} appear more than once")


def graph_units(method: str, slugs: list[str]) -> list[str]:
    """Return the training units a graph method needs, in a fixed order.

    ``brute_force``: the k single units (``slug``) then the k(k-1)/2 pair units
    (``slug_i__slug_j``, i < j in the given order); ``linear``: the k single units; ``gradient``
    and ``given``: none.
    """
    _check_method(method)
    slugs = list(slugs)
    _check_slugs(slugs)
    if method not in LEARNED_FROM_RUNS:
        return []
    units = list(slugs)
    if method == "brute_force":
        units += [
            f"{slugs[i]}{PAIR_SEPARATOR}{slugs[j]}"
            for i in range(len(slugs))
            for j in range(i + 1, len(slugs))
        ]
    return units


def pair_unit(slug_i: str, slug_j: str) -> str:
    """Return the name of the pair unit of two skills, ``slug_i`` first (i before j in skill order)."""
    return f"{slug_i}{PAIR_SEPARATOR}{slug_j}"


def unit_slugs(unit: str) -> list[str]:
    """Return the skill slugs a unit trains on: ``["a"]`` for ``"a"``, ``["a", "b"]`` for ``"a__b"``."""
    if not isinstance(unit, str) or not _UNIT_RE.fullmatch(unit):
        raise SkillmixInputError(f"graph unit {unit!r}: expected SLUG or SLUG__SLUG matching {UNIT_PATTERN}")
    parts = unit.split(PAIR_SEPARATOR)
    if len(parts) == 2 and parts[0] == parts[1]:
        raise SkillmixInputError(f"graph unit {unit!r}: a pair unit needs two different skills")
    return parts


# --------------------------------------------------------------------------------------------
# Options


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
                f"graph.measure: got {self.measure!r}, expected one of {', '.join(MEASURES)}"
            )
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise SkillmixInputError(f"graph.window: got {self.window!r}, expected an integer >= 1")
        if not _is_number(self.target_loss) or float(self.target_loss) <= 0:
            raise SkillmixInputError(
                f"graph.target_loss: got {self.target_loss!r}, expected a finite number > 0"
            )
        self.target_loss = float(self.target_loss)
        if self.normalise not in NORMALISATIONS:
            raise SkillmixInputError(
                f"graph.normalise: got {self.normalise!r}, expected one of {', '.join(NORMALISATIONS)}"
            )
        if not isinstance(self.clip_negative, bool):
            raise SkillmixInputError(
                f"graph.clip_negative: got {self.clip_negative!r}, expected true or false"
            )
        if self.threshold is not None:
            if not _is_number(self.threshold):
                raise SkillmixInputError(
                    f"graph.threshold: got {self.threshold!r}, expected a finite number or null"
                )
            self.threshold = float(self.threshold)
        if self.binary_edge_weight is not None:
            if not _is_number(self.binary_edge_weight) or float(self.binary_edge_weight) <= 0:
                raise SkillmixInputError(
                    f"graph.binary_edge_weight: got {self.binary_edge_weight!r}, "
                    "expected a finite number > 0 or null"
                )
            self.binary_edge_weight = float(self.binary_edge_weight)
        if self.diagonal != "measured":
            if not _is_number(self.diagonal):
                raise SkillmixInputError(
                    f"graph.diagonal: got {self.diagonal!r}, expected 'measured' or a finite number"
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


def _unit_name(curve: pd.DataFrame) -> str:
    if "unit" in curve.columns and len(curve):
        names = pd.unique(curve["unit"].astype(str))
        if len(names) == 1:
            return str(names[0])
        return "/".join(str(n) for n in names[:3])
    return "<unknown unit>"


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
            f"graph.window needs {options.window}; lower graph.window or evaluate more often"
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


def measure_loss(curve: pd.DataFrame, skill: str, options: GraphOptions) -> float:
    """Return the after-training loss of ``skill`` in one unit's curve (``options.measure``)."""
    unit = _unit_name(curve)
    _check_curve(curve, unit)
    return _measure(*_skill_rows(curve, skill, unit), options, unit, skill)


def initial_loss(curve: pd.DataFrame, skill: str) -> float:
    """Return the step-0 (before training) loss of ``skill`` in one unit's curve."""
    unit = _unit_name(curve)
    _check_curve(curve, unit)
    return _initial(*_skill_rows(curve, skill, unit), unit, skill)


class _Unit:
    """One unit's curve grouped by skill once, for repeated look-ups."""

    def __init__(self, unit: str, curve: pd.DataFrame, options: GraphOptions) -> None:
        _check_curve(curve, unit)
        names = sorted({str(name) for name in curve["unit"].unique()})
        if names != [unit]:
            raise SkillmixInputError(
                f"graph unit {unit!r}: its curve's unit column holds {_named(names)}, expected only {unit!r}"
            )
        self.unit = unit
        self.options = options
        self.groups = {skill: rows for skill, rows in curve.groupby("skill", sort=False)}

    def _rows(self, skill: str) -> tuple[np.ndarray, np.ndarray]:
        if skill not in self.groups:
            raise SkillmixInputError(f"graph unit {self.unit!r}: curve has no loss for skill {skill!r}")
        return _skill_rows(self.groups[skill], skill, self.unit)

    def after(self, skill: str) -> float:
        return _measure(*self._rows(skill), self.options, self.unit, skill)

    def before(self, skill: str) -> float:
        return _initial(*self._rows(skill), self.unit, skill)

    def steps_to(self, skill: str, target: float) -> float:
        """The first evaluated step at which the skill's loss is <= target (inf if never)."""
        steps, losses = self._rows(skill)
        reached = steps[losses <= target]
        return float(reached.min()) if len(reached) else math.inf


def _relative(delta: float, reference: float, unit: str, skill: str) -> float:
    if reference <= 0:
        raise SkillmixInputError(
            f"graph unit {unit!r}: graph.normalise 'relative' divides by the loss of skill {skill!r}, "
            f"which is {reference}; expected a positive loss (use graph.normalise: raw)"
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

    Then ``clip_negative``, ``threshold``, ``binary_edge_weight`` and ``diagonal`` (see
    :class:`GraphOptions`), in that order.
    """
    _check_method(method)
    if method not in LEARNED_FROM_RUNS:
        how = "read with load_given" if method == "given" else "computed by skillmix.gradient_graph"
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
            f"graph.method {method!r}: missing curve(s) for unit(s) {_named(missing)} "
            f"({len(missing)} of {len(units)} units)"
        )
    loaded = {unit: _Unit(unit, curves[unit], options) for unit in units}
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
    raw = pd.concat([curves[unit].loc[:, list(CURVE_COLUMNS)] for unit in units], ignore_index=True)
    raw = raw.astype({"unit": str, "step": "int64", "skill": str, "loss": "float64"})
    return A, raw


# --------------------------------------------------------------------------------------------
# Given graphs


def _read_names_file(path: Path) -> tuple[list[str], list[str] | None]:
    """Return (rows, columns or None) from a .txt or .json skills file."""
    if not path.is_file():
        raise SkillmixInputError(f"graph skills file {path}: not found")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [name for name in names if name], None
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SkillmixInputError(f"graph skills file {path}: not valid JSON ({error})") from error
        if isinstance(data, list):
            return _name_list(data, f"graph skills file {path}"), None
        if isinstance(data, dict) and "rows" in data:
            unknown = sorted(set(data) - {"rows", "columns"})
            if unknown:
                raise SkillmixInputError(
                    f"graph skills file {path}: unknown key(s) {_named(unknown)}; expected rows and columns"
                )
            rows = _name_list(data["rows"], f"graph skills file {path}, key rows")
            columns = data.get("columns")
            return rows, None if columns is None else _name_list(
                columns, f"graph skills file {path}, key columns"
            )
        raise SkillmixInputError(
            f"graph skills file {path}: expected a JSON list of skill names or "
            '{"rows": [...], "columns": [...]}'
        )
    raise SkillmixInputError(f"graph skills file {path}: expected a .txt or .json file")


def _name_list(values: Any, origin: str) -> list[str]:
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise SkillmixInputError(f"{origin}: expected a list of skill names (strings)")
    return list(values)


def _check_unique(names: list[str], origin: str) -> None:
    seen: set[str] = set()
    duplicates = sorted({name for name in names if name in seen or seen.add(name)})
    if duplicates:
        raise SkillmixInputError(f"{origin}: skill(s) {_named(duplicates)} appear more than once")


def load_given(
    adjacency: str | os.PathLike,
    skills_file: str | os.PathLike | None,
    data_skills: list[str],
    rows: list[str] | None = None,
    columns: list[str] | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Load a given skills graph and put it in the data's skill order; values are never altered.

    The skill order comes from ``skills_file`` (``.txt``: one name per line, blank lines ignored;
    ``.json``: a list, or ``{"rows": [...], "columns": [...]}``) or from explicit ``rows`` /
    ``columns`` lists. One list for a square matrix means the same order for rows and columns.

    Returns ``(A, rows, columns)`` in data order, graph skills that are not data skills dropped.
    With one order for rows and columns, every data skill must be a row and both axes are
    ``data_skills``. With separate row and column lists (out-of-domain graphs: training skills
    × evaluation skills), every data skill must be a row or a column; rows are the data skills
    among the graph's rows, columns those among its columns.
    """
    path = Path(adjacency)
    if not path.is_file():
        raise SkillmixInputError(f"graph.adjacency {path}: file not found")
    try:
        matrix = np.load(path, allow_pickle=False)
    except Exception as error:  # any unreadable file is bad user input
        raise SkillmixInputError(f"graph.adjacency {path}: not a readable .npy array ({error})") from error
    if not isinstance(matrix, np.ndarray) or matrix.ndim != 2:
        shape = getattr(matrix, "shape", None)
        raise SkillmixInputError(f"graph.adjacency {path}: expected a 2-D matrix, got shape {shape}")
    if not (np.issubdtype(matrix.dtype, np.number) or matrix.dtype == bool):
        raise SkillmixInputError(f"graph.adjacency {path}: expected numbers, got dtype {matrix.dtype}")
    matrix = matrix.astype(np.float64)
    if not np.isfinite(matrix).all():
        bad = np.argwhere(~np.isfinite(matrix))
        raise SkillmixInputError(
            f"graph.adjacency {path}: {len(bad)} non-finite entr{'y' if len(bad) == 1 else 'ies'} "
            f"(first at row {bad[0][0]}, column {bad[0][1]}); expected finite numbers"
        )

    if skills_file is not None and (rows is not None or columns is not None):
        raise SkillmixInputError(
            f"graph.skills_file {skills_file}: give either a skills file or explicit rows/columns, not both"
        )
    if skills_file is not None:
        origin = f"graph.skills_file {Path(skills_file)}"
        row_names, column_names = _read_names_file(Path(skills_file))
    elif rows is not None:
        origin = "graph.rows/graph.columns"
        row_names = _name_list(rows, "graph.rows")
        column_names = None if columns is None else _name_list(columns, "graph.columns")
    else:
        raise SkillmixInputError(
            f"graph.adjacency {path}: the skill order is needed: set graph.skills_file (.txt or .json) "
            "or graph.rows/graph.columns"
        )
    same_order = column_names is None or column_names == row_names
    if column_names is None:
        column_names = row_names
    if len(row_names) != matrix.shape[0] or len(column_names) != matrix.shape[1]:
        raise SkillmixInputError(
            f"graph.adjacency {path}: matrix shape {matrix.shape} does not match {origin} "
            f"({len(row_names)} row names, {len(column_names)} column names)"
        )
    _check_unique(row_names, f"{origin} rows")
    _check_unique(column_names, f"{origin} columns")

    data_skills = list(data_skills)
    _check_unique(data_skills, "data skills")
    covered = set(row_names) if same_order else set(row_names) | set(column_names)
    missing = [skill for skill in data_skills if skill not in covered]
    if missing:
        extra = [name for name in row_names if name not in set(data_skills)]
        where = "rows" if same_order else "rows or columns"
        raise SkillmixInputError(
            f"graph.adjacency {path}: data skill(s) {_named(missing)} are not {where} of the graph "
            f"({origin}); graph skills not in the data: {_named(extra) if extra else 'none'}"
        )
    row_index = {name: i for i, name in enumerate(row_names)}
    column_index = {name: j for j, name in enumerate(column_names)}
    out_rows = data_skills if same_order else [s for s in data_skills if s in row_index]
    out_columns = data_skills if same_order else [s for s in data_skills if s in column_index]
    if not out_rows or not out_columns:
        raise SkillmixInputError(
            f"graph.adjacency {path}: the graph needs at least one data skill among its rows "
            f"({_named(row_names)}) and its columns ({_named(column_names)})"
        )
    A = matrix[np.ix_([row_index[s] for s in out_rows], [column_index[s] for s in out_columns])]
    return np.ascontiguousarray(A), list(out_rows), list(out_columns)


# --------------------------------------------------------------------------------------------
# Files and figure


def plot_heatmap(
    A: np.ndarray, rows: list[str], columns: list[str], path: str | os.PathLike, title: str
) -> None:
    """Draw ``A`` as a heatmap: diverging colours centred at 0, values in cells when k <= 20.

    Rows ("trained on") are training skills, columns ("evaluated on") evaluation skills.
    """
    A = np.asarray(A, dtype=float)
    n_rows, n_cols = A.shape
    limit = float(np.nanmax(np.abs(A))) if A.size else 0.0
    limit = limit if limit > 0 else 1.0
    width = min(4.0 + 0.55 * n_cols, 30.0)
    height = min(3.0 + 0.45 * n_rows, 30.0)
    fig, ax = plt.subplots(figsize=(width, height), constrained_layout=True)
    image = ax.imshow(A, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="A[i, j] (positive helps)")
    ax.set_xticks(range(n_cols), [str(c) for c in columns], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), [str(r) for r in rows], fontsize=8)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("trained on")
    if max(n_rows, n_cols) <= _ANNOTATE_MAX:
        for i in range(n_rows):
            for j in range(n_cols):
                value = A[i, j]
                colour = "white" if abs(value) > 0.6 * limit else "black"
                ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(title)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_graph(
    out_dir: str | os.PathLike,
    A: np.ndarray,
    rows: list[str],
    columns: list[str],
    raw: pd.DataFrame | None,
    method: str,
    options: GraphOptions | None,
    extra: dict | None = None,
) -> None:
    """Write a graph folder, each file atomically.

    Files: adjacency.npy (float64), skills.json ``{"rows", "columns"}``, raw.parquet (the units'
    curves; empty for a given graph), heatmap.png, graph.json (method, options or null, shape,
    extra) — written last.
    """
    _check_method(method)
    A = np.asarray(A, dtype=np.float64)
    rows, columns = list(rows), list(columns)
    if A.ndim != 2 or A.shape != (len(rows), len(columns)):
        raise SkillmixInputError(
            f"graph: matrix shape {A.shape} does not match {len(rows)} rows and {len(columns)} columns"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    with atomic_file(out / ADJACENCY_FILE) as tmp, open(tmp, "wb") as handle:
        np.save(handle, A, allow_pickle=False)

    write_json({"rows": rows, "columns": columns}, out / SKILLS_FILE)

    if raw is None:
        raw = pd.DataFrame(
            {
                column: pd.Series(dtype=dtype)
                for column, dtype in zip(CURVE_COLUMNS, ("str", "int64", "str", "float64"), strict=True)
            }
        )
    write_parquet(raw, out / RAW_FILE)

    with atomic_file(out / HEATMAP_FILE) as tmp:
        plot_heatmap(A, rows, columns, tmp, f"skills graph ({method})")

    meta = {
        "method": method,
        "options": None if options is None else options.to_dict(),
        "shape": list(A.shape),
        "extra": extra,
    }
    write_json(meta, out / META_FILE)


def graph_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the off-diagonal entries of two k × k graphs (average ranks
    for ties): how alike two ways of learning a graph order the transfer between skills."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise SkillmixInputError(f"graph agreement: need two k × k graphs, got {a.shape} and {b.shape}")
    off = ~np.eye(a.shape[0], dtype=bool)
    ra, rb = pd.Series(a[off]).rank().to_numpy(), pd.Series(b[off]).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def edge_agreement(learned: np.ndarray, known: np.ndarray, threshold: float = 0.0) -> dict[str, float]:
    """Off-diagonal edge precision, recall and F1 of a learned graph against a known one.

    A learned edge is an off-diagonal entry > `threshold`; a known edge is one > 0. Precision
    is 1 when nothing is predicted and recall 1 when nothing is known (nothing was missed).
    """
    learned, known = np.asarray(learned, dtype=float), np.asarray(known, dtype=float)
    if learned.shape != known.shape:
        raise SkillmixInputError(f"edge agreement: graphs differ in shape, {learned.shape} and {known.shape}")
    off = ~np.eye(*learned.shape, dtype=bool)
    predicted, truth = (learned > threshold) & off, (known > 0) & off
    hits = int((predicted & truth).sum())
    precision = hits / predicted.sum() if predicted.any() else 1.0
    recall = hits / truth.sum() if truth.any() else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def read_graph(out_dir: str | os.PathLike) -> tuple[np.ndarray, list[str], list[str]]:
    """Return ``(A, rows, columns)`` from a folder written by :func:`write_graph`."""
    out = Path(out_dir)
    for name in (ADJACENCY_FILE, SKILLS_FILE):
        if not (out / name).is_file():
            raise SkillmixInputError(f"graph folder {out}: {name} not found")
    A = np.load(out / ADJACENCY_FILE, allow_pickle=False)
    try:
        names = json.loads((out / SKILLS_FILE).read_text(encoding="utf-8"))
        rows, columns = _name_list(names["rows"], "rows"), _name_list(names["columns"], "columns")
    except (json.JSONDecodeError, KeyError, TypeError, SkillmixInputError) as error:
        raise SkillmixInputError(
            f'graph folder {out}: {SKILLS_FILE} must be {{"rows": [...], "columns": [...]}} ({error})'
        ) from error
    if A.ndim != 2 or A.shape != (len(rows), len(columns)):
        raise SkillmixInputError(
            f"graph folder {out}: {ADJACENCY_FILE} has shape {A.shape} but {SKILLS_FILE} names "
            f"{len(rows)} rows and {len(columns)} columns"
        )
    return A.astype(np.float64), rows, columns


def assemble_from_files(
    method: str,
    curve_paths: list[str | os.PathLike],
    manifest_path: str | os.PathLike,
    options: dict[str, Any],
    adjacency_path: str | os.PathLike,
) -> np.ndarray:
    """Assemble a learned graph from its runs' curve files and write it beside `adjacency_path`."""
    manifest = json.loads(Path(manifest_path).read_text())
    skills = [s["name"] for s in manifest["skills"]]
    slugs = [s["slug"] for s in manifest["skills"]]
    curves = {}
    for path in curve_paths:
        curve = pd.read_parquet(path)
        curves[str(curve["unit"].iloc[0])] = curve
    opts = GraphOptions.from_config(options)
    A, raw = assemble(method, skills, slugs, curves, opts)
    write_graph(Path(adjacency_path).parent, A, skills, skills, raw, method, opts)
    return A


def given_from_files(
    adjacency: str | os.PathLike,
    skills_file: str | os.PathLike | None,
    manifest_path: str | os.PathLike,
    rows: list[str] | None,
    columns: list[str] | None,
    adjacency_path: str | os.PathLike,
) -> np.ndarray:
    """Check a given graph against the data's skills and write it, unaltered, beside `adjacency_path`."""
    manifest = json.loads(Path(manifest_path).read_text())
    skills = [s["name"] for s in manifest["skills"]]
    A, out_rows, out_columns = load_given(adjacency, skills_file, skills, rows, columns)
    extra = {"source": str(adjacency), "skills_file": None if skills_file is None else str(skills_file)}
    write_graph(Path(adjacency_path).parent, A, out_rows, out_columns, None, "given", None, extra)
    return A
