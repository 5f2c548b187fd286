"""LESS's selection: the candidates of top influence on the target (Xia et al., 2024, "LESS:
Selecting Influential Data for Targeted Instruction Tuning").

:class:`LessSelector` takes the top `size` pool rows by their influence score (the `influence`
rule's table, :func:`skillmix.selection.influence.score_datastore`), ties broken by id; with
`select.selection.balance` it takes them in turns over the target's answers, skills or examples
instead (:func:`select_examples`). The ranking itself is :mod:`skillmix.selection.ranking`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from skillmix.infra.errors import SkillmixInputError
from skillmix.selection.ranking import balanced_top, select_top
from skillmix.selection.selector import Selector

REGISTER = [
    {
        "name": "less",
        "worker": "LessSelector",
        "summary": "LESS: top influence of LoRA gradient features against the target",
        "settings": "select",
        "needs": ["warmup", "datastore", "targets"],
    },
]
"""This module's selection method in the registry (skillmix.infra.registry)."""

BALANCES = ("none", "answer", "skill", "example")


class LessSelector(Selector):
    """LESS: the top influence scores (`scores`: the influence rule's table), balanced over the
    `target` as `select.selection.balance` says."""

    name = "less"

    def choose(
        self, pool: pd.DataFrame, size: int, scores: pd.DataFrame | None, target: pd.DataFrame | None
    ) -> pd.DataFrame:
        return select_examples(
            pool, scores, size, balance=self.settings["selection"]["balance"], target=target
        )


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
