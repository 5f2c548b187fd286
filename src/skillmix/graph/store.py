"""The graph folder: adjacency.npy, skills.json, raw.parquet, heatmap.png, graph.json; reading it.

Written by :mod:`skillmix.graph.writing` (which draws the heatmap with matplotlib); a job that only
reads a graph imports this module alone.
"""

from __future__ import annotations

import json
import os
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


def read_graph(out_dir: str | os.PathLike) -> tuple[np.ndarray, list[str], list[str]]:
    """Return ``(A, rows, columns)`` from a folder written by :func:`skillmix.graph.writing.write_graph`."""
    out = Path(out_dir)
    for name in (ADJACENCY_FILE, SKILLS_FILE):
        if not (out / name).is_file():
            raise SkillmixInputError(f"graph folder {out}: {name} not found")
    A = np.load(out / ADJACENCY_FILE, allow_pickle=False)
    try:
        names = json.loads((out / SKILLS_FILE).read_text(encoding="utf-8"))
        rows, columns = name_list(names["rows"], "rows"), name_list(names["columns"], "columns")
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
