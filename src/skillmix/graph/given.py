"""Given skills graphs: a published ``.npy`` matrix and its skill order, checked, never altered."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from skillmix.data.slicing import read_manifest
from skillmix.graph.store import name_list
from skillmix.graph.units import named
from skillmix.graph.writing import write_graph
from skillmix.infra.errors import SkillmixInputError

MAX_MAGNITUDE = 1e100
"""Largest |A[i, j]| a given graph may hold: far beyond any loss-decrease graph (published ones lie
in [-2, 2]), and small enough that the heatmap's colour range and η · A · L stay finite in float64."""

_KEY = "graph.given.adjacency"
_EXPECTED = (
    "expected a NumPy .npy file (numpy.save) of a square numeric matrix, one row and one column per "
    "skill (training × evaluation skills when the skill order names separate rows and columns)"
)
_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _bad_adjacency(path: Path, problem: str) -> SkillmixInputError:
    return SkillmixInputError(f"config {_KEY}: {path}: {problem}; {_EXPECTED}")


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of a `.npy` file, or an error saying it is not one."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = _HEADER_READERS.get(version)
            header = None if read_header is None else read_header(handle)
    except (OSError, ValueError, EOFError) as error:
        raise _bad_adjacency(
            path, "not a .npy array file (no valid .npy header: random bytes, a pickle or an .npz archive?)"
        ) from error
    if header is None:
        raise _bad_adjacency(path, f"unsupported .npy format version {version[0]}.{version[1]}")
    shape, _, dtype = header
    return tuple(shape), dtype


def read_adjacency(path: Path) -> np.ndarray:
    """The float64 matrix of a user's `.npy` file, checked: 2-D, numeric, finite, of sane magnitude.

    Never unpickles: object arrays and pickles are refused, as is anything that is not a `.npy` file.
    """
    if not path.is_file():
        raise SkillmixInputError(f"config {_KEY}: {path}: file not found")
    shape, dtype = _npy_header(path)
    if dtype.hasobject:
        raise _bad_adjacency(path, "it holds Python objects (dtype object), which are never unpickled")
    if dtype.kind not in _NUMERIC_KINDS:
        raise _bad_adjacency(path, f"it holds dtype {dtype}, not real numbers")
    if len(shape) != 2:
        raise _bad_adjacency(path, f"it holds a {len(shape)}-D array of shape {shape}, not a 2-D matrix")
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        problem = f"the file is damaged or truncated (shape {shape}, dtype {dtype})"
        raise _bad_adjacency(path, problem) from error
    matrix = matrix.astype(np.float64)
    _check_values(path, matrix)
    return matrix


def _check_values(path: Path, matrix: np.ndarray) -> None:
    """Refuse NaN, ±Inf and magnitudes above `MAX_MAGNITUDE` (they overflow the heatmap and update)."""
    if not np.isfinite(matrix).all():
        bad = np.argwhere(~np.isfinite(matrix))
        raise SkillmixInputError(
            f"config {_KEY}: {path}: {len(bad)} non-finite entr{'y' if len(bad) == 1 else 'ies'} "
            f"(first at row {bad[0][0]}, column {bad[0][1]}); expected finite numbers"
        )
    if matrix.size == 0:
        return
    i, j = np.unravel_index(np.argmax(np.abs(matrix)), matrix.shape)
    if abs(matrix[i, j]) > MAX_MAGNITUDE:
        raise SkillmixInputError(
            f"config {_KEY}: {path}: entry at row {i}, column {j} is {matrix[i, j]:.3g}; expected "
            f"skills-graph values of magnitude at most {MAX_MAGNITUDE:.0g} (loss decreases; "
            "published graphs lie in [-2, 2]), which the heatmap and the mixture update can use "
            "without overflow"
        )


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
            return name_list(data, f"graph skills file {path}"), None
        if isinstance(data, dict) and "rows" in data:
            unknown = sorted(set(data) - {"rows", "columns"})
            if unknown:
                raise SkillmixInputError(
                    f"graph skills file {path}: unknown key(s) {named(unknown)}; expected rows and columns"
                )
            rows = name_list(data["rows"], f"graph skills file {path}, key rows")
            columns = data.get("columns")
            return rows, None if columns is None else name_list(
                columns, f"graph skills file {path}, key columns"
            )
        raise SkillmixInputError(
            f"graph skills file {path}: expected a JSON list of skill names or "
            '{"rows": [...], "columns": [...]}'
        )
    raise SkillmixInputError(f"graph skills file {path}: expected a .txt or .json file")


def _check_unique(names: list[str], origin: str) -> None:
    seen: set[str] = set()
    duplicates = sorted({name for name in names if name in seen or seen.add(name)})
    if duplicates:
        raise SkillmixInputError(f"{origin}: skill(s) {named(duplicates)} appear more than once")


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
    matrix = read_adjacency(path)

    if skills_file is not None and (rows is not None or columns is not None):
        raise SkillmixInputError(
            f"graph.given.skills {skills_file}: give either a skills file or explicit rows/columns, not both"
        )
    if skills_file is not None:
        origin = f"graph.given.skills {Path(skills_file)}"
        row_names, column_names = _read_names_file(Path(skills_file))
    elif rows is not None:
        origin = "graph.given.rows/graph.given.columns"
        row_names = name_list(rows, "graph.given.rows")
        column_names = None if columns is None else name_list(columns, "graph.given.columns")
    else:
        raise SkillmixInputError(
            f"config {_KEY}: {path}: the skill order is needed: set graph.given.skills "
            "(.txt or .json) or graph.given.rows/graph.given.columns"
        )
    same_order = column_names is None or column_names == row_names
    if column_names is None:
        column_names = row_names
    if same_order and matrix.shape[0] != matrix.shape[1]:
        raise _bad_adjacency(
            path,
            f"matrix shape {matrix.shape} is not square and does not match the single skill order of "
            f"{origin} ({len(row_names)} names)",
        )
    if len(row_names) != matrix.shape[0] or len(column_names) != matrix.shape[1]:
        raise SkillmixInputError(
            f"config {_KEY}: {path}: matrix shape {matrix.shape} does not match {origin} "
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
            f"config {_KEY}: {path}: data skill(s) {named(missing)} are not {where} of the graph "
            f"({origin}); graph skills not in the data: {named(extra) if extra else 'none'}"
        )
    row_index = {name: i for i, name in enumerate(row_names)}
    column_index = {name: j for j, name in enumerate(column_names)}
    out_rows = data_skills if same_order else [s for s in data_skills if s in row_index]
    out_columns = data_skills if same_order else [s for s in data_skills if s in column_index]
    if not out_rows or not out_columns:
        raise SkillmixInputError(
            f"config {_KEY}: {path}: the graph needs at least one data skill among its rows "
            f"({named(row_names)}) and its columns ({named(column_names)})"
        )
    A = matrix[np.ix_([row_index[s] for s in out_rows], [column_index[s] for s in out_columns])]
    return np.ascontiguousarray(A), list(out_rows), list(out_columns)


# --------------------------------------------------------------------------------------------
# The given-graph job


def given_from_files(
    adjacency: str | os.PathLike,
    skills_file: str | os.PathLike | None,
    manifest_path: str | os.PathLike,
    rows: list[str] | None,
    columns: list[str] | None,
    adjacency_path: str | os.PathLike,
) -> np.ndarray:
    """Check a given graph against the data's skills and write it, unaltered, beside `adjacency_path`."""
    manifest = read_manifest(manifest_path)
    skills = [s["name"] for s in manifest["skills"]]
    A, out_rows, out_columns = load_given(adjacency, skills_file, skills, rows, columns)
    extra = {"source": str(adjacency), "skills_file": None if skills_file is None else str(skills_file)}
    write_graph(Path(adjacency_path).parent, A, out_rows, out_columns, None, "given", None, extra)
    return A
