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


BALANCES = ("none", "answer", "skill", "example")


def select_examples(
    pool: pd.DataFrame,
    scores: pd.DataFrame,
    size: int,
    balance: str = "none",
    target: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The top `size` pool rows by score (ties by id), best first, with columns rank and score.

    `balance` "answer" takes the best remaining candidate of each answer of the `target`
    examples in turn, "skill" the best of each target skill by its own score column
    (`score_<skill>`), "example" the nearest of each target example by its column
    (`example_<id>`, see `score_datastore(per_example=True)`), so each group gets an equal
    share while it has candidates; the rest of `size` comes from the whole pool by score. Rank
    is the order of taking.
    """
    if not scores["id"].equals(pool["id"]):
        raise SkillmixInputError("scores and candidate pool list different examples (stale scores?)")
    if balance not in BALANCES:
        raise SkillmixInputError(f"select.selection.balance must be one of {BALANCES}, got {balance!r}")
    ids = scores["id"].tolist()
    if balance == "none":
        picked = select_top(ids, scores["score"].to_numpy(), k=size)
    else:
        picked = balanced_top(
            ids, _group_scores(pool, scores, balance, target), scores["score"].to_numpy(), size
        )
    out = pool.iloc[picked].reset_index(drop=True)
    out.insert(0, "score", scores["score"].to_numpy()[picked])
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


def _group_scores(
    pool: pd.DataFrame, scores: pd.DataFrame, balance: str, target: pd.DataFrame | None
) -> dict[str, np.ndarray]:
    """Per group, each candidate's score within it (−inf outside it): a target answer's group holds
    the candidates with that answer, a target skill's ranks every candidate by its own column."""
    if balance in ("skill", "example"):
        prefix = "score_" if balance == "skill" else "example_"
        cols = [c for c in scores.columns if c.startswith(prefix)]
        if not cols:
            raise SkillmixInputError(
                f"{balance}-balanced selection needs the score columns {prefix}<{balance}> "
                "(re-run the influence rule with select.selection.balance set)"
            )
        return {c.removeprefix(prefix): scores[c].to_numpy(np.float64) for c in cols}
    if target is None or "answer" not in target or "answer" not in pool:
        raise SkillmixInputError(
            "answer-balanced selection needs an answer column in the pool and the target"
        )
    total = scores["score"].to_numpy(np.float64)
    answers = pool["answer"].astype(str).to_numpy()
    return {a: np.where(answers == a, total, -np.inf) for a in dict.fromkeys(target["answer"].astype(str))}


def balanced_top(
    ids: Sequence[str], groups: Mapping[str, np.ndarray], scores: np.ndarray, k: int
) -> list[int]:
    """k row indices taken in turns, one per group (best remaining by the group's score, ties by
    id; groups in order of their best score), then by `scores` once every group is used up.
    A row is taken once; non-finite scores are never taken."""
    ids = np.asarray(ids, dtype=str)  # once for every group's ranking
    order = {g: ranked(ids, s)[:k] for g, s in groups.items()}
    turn = sorted((g for g in order if order[g]), key=lambda g: -groups[g][order[g][0]])
    taken: list[int] = []
    seen: set[int] = set()
    pos = dict.fromkeys(turn, 0)
    while len(taken) < k and turn:
        for g in list(turn):
            rows = order[g]
            while pos[g] < len(rows) and rows[pos[g]] in seen:
                pos[g] += 1
            if pos[g] == len(rows):
                turn.remove(g)
                continue
            taken.append(rows[pos[g]])
            seen.add(rows[pos[g]])
            if len(taken) == k:
                break
    if len(taken) < k:
        rest = [i for i in ranked(ids, scores) if i not in seen]
        taken.extend(rest[: k - len(taken)])
    return taken


def answer_composition(
    pool: pd.DataFrame, selections: Mapping[str, pd.DataFrame], top: int = 10
) -> pd.DataFrame:
    """The answer (label) distribution of the pool and of each selection: the `top` answers most
    frequent in the pool or any selection, then one row "(other)"; counts and shares as composition."""
    frames = {"pool": pool, **selections}
    counts = {name: f["answer"].astype(str).value_counts() for name, f in frames.items()}
    totals = (
        pd.concat(list(counts.values())).groupby(level=0).sum().sort_values(ascending=False, kind="stable")
    )
    keep = list(totals.index[:top])
    out = pd.DataFrame({"answer": [*keep, "(other)"]})
    for name, f in frames.items():
        c = counts[name]
        n = [int(c.get(a, 0)) for a in keep]
        out[name] = [*n, int(len(f) - sum(n))]
        out[f"{name}_share"] = out[name] / max(1, len(f))
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
    """One JSON object per row, in row order; the file appears only when complete. A chat row's
    `messages` is written as its list of turns; rows without one leave the key out."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in frame.to_dict("records"):
            record = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            chat = record.pop("messages", "")
            if chat:
                record["messages"] = json.loads(chat)
            f.write(json.dumps(record) + "\n")


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
    order = ranked(ids, scores)
    if k > len(order):
        log.warning(
            "select_top: asked for %d rows but only %d of %d have a finite score; returning %d",
            k,
            len(order),
            n,
            len(order),
        )
    return order[:k]


def ranked(ids: Sequence[str], scores: np.ndarray) -> list[int]:
    """Indices of the rows with a finite score, by score descending, ties by id then index."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    id_arr = np.asarray(ids, dtype=str)[finite]
    order = np.lexsort((finite, id_arr, -scores[finite]))  # last key is primary
    return finite[order].tolist()
