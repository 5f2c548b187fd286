"""The graph folder: adjacency.npy, skills.json, raw.parquet, heatmap.png, graph.json; reading it.

Written by :mod:`skillmix.graph.writing` (which draws the heatmap with matplotlib); a job that only
reads a graph imports this module alone.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from skillmix.infra.errors import SkillmixInputError

CURVE_COLUMNS = ("unit", "step", "skill", "loss")
"""Columns of a unit's curve: every skill's validation loss at every evaluated step."""
REPEAT_COLUMN = "repeat"
"""Optional curve column: which run of a unit trained several times (graph.runs.repeats)."""
ADJACENCY_FILE = "adjacency.npy"
SKILLS_FILE = "skills.json"
RAW_FILE = "raw.parquet"
HEATMAP_FILE = "heatmap.png"
META_FILE = "graph.json"


def name_list(values: Any, origin: str) -> list[str]:
    """A list of skill names, or an error naming `origin`."""
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise SkillmixInputError(f"{origin}: expected a list of skill names (strings)")
    return list(values)


def _rebuild(out: Path) -> str:
    return (
        f"the graph folder was edited or damaged after it was written; delete the folder {out} and "
        "run snakemake again to rebuild it"
    )


def _load_matrix(out: Path) -> np.ndarray:
    """adjacency.npy as a finite float matrix (never unpickled)."""
    path = out / ADJACENCY_FILE
    try:
        A = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # truncated, not .npy, or an object array
        raise SkillmixInputError(
            f"graph folder {out}: {ADJACENCY_FILE} is not a readable float matrix ({error}); {_rebuild(out)}"
        ) from error
    if not isinstance(A, np.ndarray) or not np.issubdtype(A.dtype, np.floating):
        kind = A.dtype if isinstance(A, np.ndarray) else type(A).__name__
        raise SkillmixInputError(
            f"graph folder {out}: {ADJACENCY_FILE} holds {kind} values, expected floats; {_rebuild(out)}"
        )
    if not np.isfinite(A).all():
        at = tuple(int(i) for i in np.argwhere(~np.isfinite(A))[0])
        raise SkillmixInputError(
            f"graph folder {out}: {ADJACENCY_FILE} has a value that is not finite ({A[at]} at {at}); "
            f"{_rebuild(out)}"
        )
    return A


def _load_names(out: Path) -> tuple[list[str], list[str]]:
    """skills.json's row and column names: non-empty lists of distinct strings."""
    try:
        names = json.loads((out / SKILLS_FILE).read_text(encoding="utf-8"))
        rows, columns = name_list(names["rows"], "rows"), name_list(names["columns"], "columns")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, SkillmixInputError) as error:
        raise SkillmixInputError(
            f'graph folder {out}: {SKILLS_FILE} must be {{"rows": [...], "columns": [...]}} ({error}); '
            f"{_rebuild(out)}"
        ) from error
    for what, values in (("rows", rows), ("columns", columns)):
        repeated = sorted(v for v, n in Counter(values).items() if n > 1)
        if not values or repeated:
            problem = f"repeats {repeated[:5]}" if repeated else "is empty"
            raise SkillmixInputError(
                f"graph folder {out}: {SKILLS_FILE} {what} {problem}, expected distinct skill names; "
                f"{_rebuild(out)}"
            )
    return rows, columns


def read_graph(
    out_dir: str | os.PathLike, skills: list[str] | None = None
) -> tuple[np.ndarray, list[str], list[str]]:
    """Return ``(A, rows, columns)`` from a folder written by :func:`skillmix.graph.writing.write_graph`.

    Checked: A a finite float matrix of shape (rows, columns) (as graph.json records it, if it
    does), skills.json's rows and columns distinct names, and, given `skills` (the data's), all
    of them skills of the data. Raises naming the folder and how to rebuild it.
    """
    out = Path(out_dir)
    for name in (ADJACENCY_FILE, SKILLS_FILE):
        if not (out / name).is_file():
            raise SkillmixInputError(f"graph folder {out}: {name} not found")
    A = _load_matrix(out)
    rows, columns = _load_names(out)
    if A.ndim != 2 or A.shape != (len(rows), len(columns)):
        raise SkillmixInputError(
            f"graph folder {out}: {ADJACENCY_FILE} has shape {A.shape} but {SKILLS_FILE} names "
            f"{len(rows)} rows and {len(columns)} columns; {_rebuild(out)}"
        )
    recorded = _recorded_shape(out)
    if recorded is not None and recorded != list(A.shape):
        raise SkillmixInputError(
            f"graph folder {out}: {ADJACENCY_FILE} has shape {A.shape} but {META_FILE} records "
            f"{recorded}; {_rebuild(out)}"
        )
    if skills is not None:
        unknown = [name for name in dict.fromkeys(rows + columns) if name not in set(skills)]
        if unknown:
            raise SkillmixInputError(
                f"graph folder {out}: {SKILLS_FILE} names {[ascii(n) for n in unknown[:5]]}, not skills "
                f"of the data ({len(skills)} skills); {_rebuild(out)}"
            )
    return A.astype(np.float64), rows, columns


def _recorded_shape(out: Path) -> list[int] | None:
    """The shape graph.json records, if it is there and readable (it is written last)."""
    try:
        shape = json.loads((out / META_FILE).read_text(encoding="utf-8")).get("shape")
    except (OSError, ValueError, AttributeError):
        return None
    return shape if isinstance(shape, list) else None
