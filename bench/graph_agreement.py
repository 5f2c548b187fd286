"""How alike two skills graphs are: rank agreement of the entries, precision and recall of the edges.

Used by the benchmarks (bench/skillit_default.py) to score learned graphs against a known one;
tests/bench/test_graph_agreement.py imports it with bench/ on the path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from skillmix.infra.errors import SkillmixInputError


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
