"""The graph folder: adjacency.npy, skills.json, raw.parquet, heatmap.png, graph.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from skillmix.graph.units import check_method  # noqa: E402
from skillmix.infra.errors import SkillmixInputError  # noqa: E402
from skillmix.infra.jobs import atomic_file, write_json, write_parquet  # noqa: E402

CURVE_COLUMNS = ("unit", "step", "skill", "loss")
"""Columns of a unit's curve: every skill's validation loss at every evaluated step."""
REPEAT_COLUMN = "repeat"
"""Optional curve column: which run of a unit trained several times (graph.runs.repeats)."""
ADJACENCY_FILE = "adjacency.npy"
SKILLS_FILE = "skills.json"
RAW_FILE = "raw.parquet"
HEATMAP_FILE = "heatmap.png"
META_FILE = "graph.json"
_ANNOTATE_MAX = 20  # annotate heatmap cells up to this many rows/columns


def name_list(values: Any, origin: str) -> list[str]:
    """A list of skill names, or an error naming `origin`."""
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise SkillmixInputError(f"{origin}: expected a list of skill names (strings)")
    return list(values)


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


def read_graph(out_dir: str | os.PathLike) -> tuple[np.ndarray, list[str], list[str]]:
    """Return ``(A, rows, columns)`` from a folder written by :func:`write_graph`."""
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
