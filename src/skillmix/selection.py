"""From a gradient datastore to selected training data, and how the selection does on the target.

`score_datastore` joins the shard indexes to the candidate pool and computes LESS influence
scores (`skillmix.influence.influence_scores`). `select_examples` takes the top k (or top p%)
with ties broken by id, `random_examples` the same number uniformly at random (the baseline),
and `composition` tabulates the share of every skill in the pool and in each selection.
`evaluate_target` measures a trained model on the target's evaluation examples, per subtask.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skillmix.errors import SkillmixInputError
from skillmix.evaluation import evaluate_skills
from skillmix.influence import influence_scores, select_top
from skillmix.jobs import atomic_file
from skillmix.modeling import load_saved, select_runtime
from skillmix.shards import read_shard
from skillmix.warmup import encode_groups

log = logging.getLogger(__name__)

STATUS_SCORED = "scored"
STATUS_NO_ANSWER = "no_answer_tokens"
STATUS_NON_FINITE = "non_finite_feature"


def read_index(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The shard indexes in shard order, as one frame (columns id, group)."""
    frames = [pd.read_parquet(p) for p in paths]
    if not frames:
        raise SkillmixInputError("no shard index files given")
    return pd.concat(frames, ignore_index=True)[["id", "group"]]


def _same_ids(indexes: Mapping[str, pd.DataFrame], what: str) -> pd.DataFrame:
    ckpts = list(indexes)
    first = indexes[ckpts[0]]
    for c in ckpts[1:]:
        if not first["id"].equals(indexes[c]["id"]):
            raise SkillmixInputError(
                f"{what} features of checkpoints {ckpts[0]} and {c} list different examples; "
                "were they computed from the same data and shard count?"
            )
    return first


def score_datastore(
    pool: pd.DataFrame,
    candidate_shards: Mapping[str, Sequence[str | os.PathLike]],
    candidate_index: Mapping[str, Sequence[str | os.PathLike]],
    target_shards: Mapping[str, Sequence[str | os.PathLike]],
    target_index: Mapping[str, Sequence[str | os.PathLike]],
    weights: Mapping[str, float],
    chunk_rows: int = 16384,
) -> pd.DataFrame:
    """LESS scores of every pool row: columns id, skill, score, status, then one score column per subtask.

    Per checkpoint the candidate and target shards are given in shard order with their indexes.
    Pool rows without features (no answer tokens) and rows with non-finite features get score
    −inf and a status saying why; they sort last.
    """
    ckpts = list(candidate_shards)
    cand = _same_ids({c: read_index(candidate_index[c]) for c in ckpts}, "candidate")
    targ = _same_ids({c: read_index(target_index[c]) for c in ckpts}, "target")
    if targ.empty:
        raise SkillmixInputError(
            "the target set has no examples with answer tokens; nothing to score against"
        )
    unknown = sorted(set(cand["id"]) - set(pool["id"]))
    if unknown:
        raise SkillmixInputError(f"candidate features name ids not in the pool, e.g. {unknown[:3]}")
    targets = {
        c: np.concatenate([read_shard(p, mmap=False) for p in target_shards[c]]).astype(np.float32)
        for c in ckpts
    }
    scores, per_subtask = influence_scores(
        candidate_shards, targets, targ["group"].tolist(), weights, chunk_rows=chunk_rows
    )
    subtasks = list(dict.fromkeys(targ["group"]))
    scored = pd.DataFrame({"id": cand["id"].to_numpy(), "score": scores})
    for j, s in enumerate(subtasks):
        scored[f"score_{s}"] = per_subtask[:, j]
    scored["status"] = np.where(np.isfinite(scores), STATUS_SCORED, STATUS_NON_FINITE)
    out = pool[["id", "skill"]].merge(scored, on="id", how="left", validate="one_to_one")
    missing = out["status"].isna()
    out.loc[missing, "status"] = STATUS_NO_ANSWER
    score_cols = ["score", *[f"score_{s}" for s in subtasks]]
    out[score_cols] = out[score_cols].fillna(-np.inf).astype(np.float32)
    if missing.any():
        log.warning(
            "%d pool example(s) have no gradient features (no answer tokens); score -inf", int(missing.sum())
        )
    return out[["id", "skill", "score", "status", *score_cols[1:]]]


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
    """Loss and exact-match accuracy of a saved model on each evaluation subtask.

    Columns subtask, loss, accuracy, n.
    """
    if evaluation.empty:
        raise SkillmixInputError("the target has no evaluation examples")
    model, tokenizer = load_saved(model_dir)
    runtime = select_runtime(model_cfg.get("device", "auto"), model_cfg.get("precision", "auto"))
    model.to(runtime.device)
    sets = encode_groups(tokenizer, evaluation, "subtask", model_cfg.get("max_length", 128))
    metrics = evaluate_skills(model, tokenizer, sets, runtime, batch_size)
    return metrics.rename(columns={"skill": "subtask"})


def read_weights(path: str | os.PathLike) -> dict[str, float]:
    """Checkpoint name -> weight from the warm-up's weights JSON."""
    data = json.loads(Path(path).read_text())
    return {str(k): float(v) for k, v in data["weights"].items()}
