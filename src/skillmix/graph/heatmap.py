"""The graph folder's heatmap.png: a skills graph drawn for a person to read.

Only the jobs that write a graph folder import it (through :mod:`skillmix.graph.writing`), so a
job that only reads a graph (:func:`skillmix.graph.store.read_graph`) never imports matplotlib.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_ANNOTATE_MAX = 20  # annotate heatmap cells up to this many rows/columns


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
