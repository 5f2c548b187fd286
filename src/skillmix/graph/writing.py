"""Writing a graph folder (layout: :mod:`skillmix.graph.store`): the matrix, its skill order, the
units' curves, the heatmap and graph.json."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skillmix.graph.heatmap import plot_heatmap
from skillmix.graph.store import (
    ADJACENCY_FILE,
    CURVE_COLUMNS,
    HEATMAP_FILE,
    META_FILE,
    RAW_FILE,
    SKILLS_FILE,
)
from skillmix.graph.units import check_method
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_file, write_json, write_parquet


def write_graph(
    out_dir: str | os.PathLike,
    A: np.ndarray,
    rows: list[str],
    columns: list[str],
    raw: pd.DataFrame | None,
    method: str,
    options: dict[str, Any] | None,
    extra: dict | None = None,
) -> None:
    """Write a graph folder, each file atomically.

    Files: adjacency.npy (float64), skills.json ``{"rows", "columns"}``, raw.parquet (the units'
    curves; empty for a given graph), heatmap.png, graph.json (method, options or null, shape,
    extra) — written last.
    """
    check_method(method)
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
        "options": options,
        "shape": list(A.shape),
        "extra": extra,
    }
    write_json(meta, out / META_FILE)
