"""From a gradient datastore to selected training data, and how the selection does on the target.

`score_datastore` joins the shard indexes to the candidate pool and computes LESS influence
scores (`skillmix.less.influence.influence_scores`). `select_examples` takes the top k (or top p%)
with ties broken by id, `random_examples` the same number uniformly at random (the baseline),
and `composition` tabulates the share of every skill in the pool and in each selection.
`evaluate_target` measures a trained model on the target's evaluation examples, per skill.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from skillmix.engine.evaluation import evaluate_skills
from skillmix.engine.modeling import load_saved, select_runtime
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_file
from skillmix.less.targets import encode_skills

log = logging.getLogger(__name__)


def selection_size(n: int, k: int | None, fraction: float | None) -> int:
    """The number of examples a selection takes from n candidates: k, or max(1, int(fraction·n))."""
    if k is not None:
        if int(k) < 1:
            raise SkillmixInputError(f"select.selection.k must be >= 1, got {k}")
        return min(int(k), n)
    if fraction is None or not 0 < fraction <= 1:
        raise SkillmixInputError(f"select.selection.fraction must be in (0, 1], got {fraction}")
    return max(1, int(fraction * n))


def select_examples(pool: pd.DataFrame, scores: pd.DataFrame, size: int) -> pd.DataFrame:
    """The top `size` pool rows by score (ties by id), best first, with columns rank and score."""
    if not scores["id"].equals(pool["id"]):
        raise SkillmixInputError("scores and candidate pool list different examples (stale scores?)")
    picked = select_top(scores["id"].tolist(), scores["score"].to_numpy(), k=size)
    out = pool.iloc[picked].reset_index(drop=True)
    out.insert(0, "score", scores["score"].to_numpy()[picked])
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


def random_examples(pool: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """`size` pool rows drawn uniformly without replacement (seeded), in pool order."""
    if not 1 <= size <= len(pool):
        raise SkillmixInputError(f"random selection of {size} from a pool of {len(pool)}")
    picked = np.sort(np.random.default_rng([seed, 5]).choice(len(pool), size=size, replace=False))
    out = pool.iloc[picked].reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


def write_jsonl(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """One JSON object per row, in row order; the file appears only when complete."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in frame.to_dict("records"):
            f.write(json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}) + "\n")


def composition(pool: pd.DataFrame, selections: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per skill (pool order): pool count and share, then count and share in each selection."""
    skills = list(dict.fromkeys(pool["skill"]))
    out = pd.DataFrame({"skill": skills})
    counts = pool["skill"].value_counts()
    out["pool"] = [int(counts.get(s, 0)) for s in skills]
    out["pool_share"] = out["pool"] / max(1, len(pool))
    for name, sel in selections.items():
        c = sel["skill"].value_counts()
        out[name] = [int(c.get(s, 0)) for s in skills]
        out[f"{name}_share"] = out[name] / max(1, len(sel))
    return out


def evaluate_target(
    model_dir: str | os.PathLike,
    model_cfg: dict[str, Any],
    evaluation: pd.DataFrame,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Loss and exact-match accuracy of a saved model on each evaluation skill.

    Columns skill, loss, accuracy, n.
    """
    model_cfg = complete("model", model_cfg)
    if evaluation.empty:
        raise SkillmixInputError("the target has no evaluation examples")
    model, tokenizer = load_saved(model_dir)
    runtime = select_runtime(model_cfg["device"], model_cfg["precision"])
    model.to(runtime.device)
    sets = encode_skills(tokenizer, evaluation, model_cfg["max_length"])
    metrics = evaluate_skills(model, tokenizer, sets, runtime, batch_size)
    return metrics


def select_top(
    ids: Sequence[str], scores: np.ndarray, k: int | None = None, fraction: float | None = None
) -> list[int]:
    """Indices of the top k (or top int(fraction·N), at least 1) rows by score, descending.

    Ties are broken by id ascending (then by index). Rows with a non-finite score (NaN, ±inf; the
    −inf of rows with NaN features) are excluded: if k exceeds the number of finite scores, fewer
    than k indices are returned and a warning is logged.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(ids)
    if scores.shape != (n,):
        raise SkillmixInputError(f"select_top: {n} ids but scores of shape {scores.shape}")
    if (k is None) == (fraction is None):
        raise SkillmixInputError("select_top: give exactly one of k and fraction")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise SkillmixInputError(f"select_top: fraction must be in (0, 1], got {fraction}")
        k = max(1, int(fraction * n))
    if int(k) <= 0:
        raise SkillmixInputError(f"select_top: k must be positive, got {k}")
    k = int(k)
    finite = np.flatnonzero(np.isfinite(scores))
    if k > finite.size:
        log.warning(
            "select_top: asked for %d rows but only %d of %d have a finite score; returning %d",
            k,
            finite.size,
            n,
            finite.size,
        )
    id_arr = np.array([str(ids[i]) for i in finite], dtype=str)
    order = np.lexsort((finite, id_arr, -scores[finite]))  # last key is primary
    return finite[order[:k]].tolist()
