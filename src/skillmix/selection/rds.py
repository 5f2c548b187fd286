"""RDS+: selection by the similarity of the model's own hidden states to the target (Ivison, Zhang,
Brahman, Koh, Dasigi, "Large-Scale Data Selection for Instruction Tuning", 2025; see
docs/methods/less.md#rds-representation-based-selection).

Every candidate and every target example becomes one vector, the model's final hidden states
pooled over the whole example (:mod:`skillmix.engine.hidden_states`, weighted mean by default);
:func:`task_scores` gives each candidate, per target skill (task), its highest cosine with that
skill's examples; :func:`round_robin` takes candidates in turns over the tasks, each task's best
remaining one per turn, until the selection is full. :class:`RdsSelector` is the method the
registry names; :func:`hidden_states_job` and :func:`scores_job` are its two DAG jobs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from skillmix.infra.errors import SkillmixInputError
from skillmix.selection.ranking import ranked
from skillmix.selection.selector import Selector

log = logging.getLogger(__name__)

REGISTER = [
    {
        "name": "rds",
        "worker": "RdsSelector",
        "summary": "RDS+: cosine of pooled final hidden states with the target, round robin over its skills",
        "settings": "select",
        "needs": ["hidden_states"],
    },
]
"""This module's selection method in the registry (skillmix.infra.registry)."""

PREFIX = "score_"
"""Column prefix of a task's scores in the scores table (score_<skill>)."""


def unit_rows(states: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by their length (float32); a zero row stays zero."""
    states = np.asarray(states, dtype=np.float32)
    norms = np.linalg.norm(states, axis=1, keepdims=True)
    return states / np.maximum(norms, eps)


def cosine(candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cosine similarity of every candidate row with every target row ([N, M])."""
    return unit_rows(candidates) @ unit_rows(targets).T


def task_scores(
    candidates: np.ndarray,
    targets: np.ndarray,
    target_tasks: Sequence[str],
    tasks: Sequence[str] | None = None,
    chunk_rows: int = 65536,
) -> dict[str, np.ndarray]:
    """Per task, each candidate's highest cosine with the task's target examples (RDS+'s per-task
    aggregation), tasks in the order of `tasks` (default: first appearance in `target_tasks`).

    A task with no target example is an error naming it; nothing is scored then.
    """
    target_tasks = [str(t) for t in target_tasks]
    if len(target_tasks) != len(targets):
        raise SkillmixInputError(f"RDS+: {len(targets)} target states but {len(target_tasks)} target skills")
    order = list(dict.fromkeys(target_tasks)) if tasks is None else [str(t) for t in tasks]
    empty = [t for t in order if t not in target_tasks]
    if empty or not order:
        named = ", ".join(repr(t) for t in empty) or "every target"
        raise SkillmixInputError(f"RDS+: target {named} has no examples to compare the candidates with")
    columns = {t: np.flatnonzero(np.asarray(target_tasks) == t) for t in order}
    unit_targets = unit_rows(targets)
    out = {t: np.empty(len(candidates), dtype=np.float32) for t in order}
    for start in range(0, len(candidates), chunk_rows):
        sims = unit_rows(candidates[start : start + chunk_rows]) @ unit_targets.T
        for t, cols in columns.items():
            out[t][start : start + chunk_rows] = sims[:, cols].max(axis=1)
    return out


def round_robin(ids: Sequence[str], scores: Mapping[str, np.ndarray], k: int) -> tuple[list[int], list[str]]:
    """Up to k row indices taken in turns over the tasks (in the order of `scores`), and the task
    that took each.

    Each task ranks the rows by its own score (descending, ties by id then row; non-finite scores
    never taken). In its turn a task takes its best row not yet looked at; a row another task has
    already taken is skipped and the turn is spent, as in the authors' round robin. Tasks that
    run out of rows drop out.
    """
    if k < 0:
        raise SkillmixInputError(f"RDS+: cannot select {k} examples")
    queues = {t: ranked(ids, s) for t, s in scores.items()}
    pos = dict.fromkeys(queues, 0)
    taken: list[int] = []
    by: list[str] = []
    seen: set[int] = set()
    while len(taken) < k and any(pos[t] < len(q) for t, q in queues.items()):
        for t, queue in queues.items():
            if len(taken) == k:
                break
            if pos[t] == len(queue):
                continue
            row = queue[pos[t]]
            pos[t] += 1
            if row not in seen:
                seen.add(row)
                taken.append(row)
                by.append(t)
    if len(taken) < k:
        log.warning("RDS+: asked for %d examples but only %d have a finite score", k, len(taken))
    return taken, by


def score_table(pool: pd.DataFrame, scores: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """The scores table of the select rule: id, skill, score (the best over tasks), score_<task>."""
    table = pd.DataFrame({"id": pool["id"].astype(str).to_numpy(), "skill": pool["skill"].to_numpy()})
    stacked = np.stack([np.asarray(s, dtype=np.float64) for s in scores.values()], axis=1)
    table["score"] = stacked.max(axis=1)
    for t, s in scores.items():
        table[PREFIX + t] = np.asarray(s, dtype=np.float64)
    return table


class RdsSelector(Selector):
    """RDS+: candidates taken round robin over the target skills, each skill by its own score
    (`scores`: the rds_scores rule's table, columns score_<skill> in target order)."""

    name = "rds"

    def choose(
        self, pool: pd.DataFrame, size: int, scores: pd.DataFrame | None, target: pd.DataFrame | None
    ) -> pd.DataFrame:
        return select_examples(pool, scores, size)


def select_examples(pool: pd.DataFrame, scores: pd.DataFrame, size: int) -> pd.DataFrame:
    """`size` pool rows, round robin over the tasks' score columns, in the order taken, with
    columns rank and score (the score of the task that took the row)."""
    if not scores["id"].astype(str).equals(pool["id"].astype(str)):
        raise SkillmixInputError("RDS+ scores and candidate pool list different examples (stale scores?)")
    columns = [c for c in scores.columns if c.startswith(PREFIX)]
    if not columns:
        raise SkillmixInputError("RDS+ scores have no score_<skill> column (re-run the rds_scores rule)")
    per_task = {c.removeprefix(PREFIX): scores[c].to_numpy(np.float64) for c in columns}
    picked, by = round_robin(scores["id"].astype(str).tolist(), per_task, size)
    out = pool.iloc[picked].reset_index(drop=True)
    out.insert(0, "score", [per_task[t][i] for i, t in zip(picked, by, strict=True)])
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    log.info("RDS+ rows taken per target skill: %s", pd.Series(by, dtype=object).value_counts().to_dict())
    return out


def hidden_states_job(
    examples: str | os.PathLike,
    states: str | os.PathLike,
    index: str | os.PathLike,
    info: str | os.PathLike,
    *,
    what: str,
    model_cfg: dict[str, Any],
    rds_cfg: dict[str, Any],
    stamp: dict[str, Any] | None = None,
) -> None:
    """The hidden_states rule's job: the pooled final hidden states of an examples file (the pool or
    the target set) with the configured model as it is (no LoRA), the ids and skills in order, and
    an info JSON (pooling, width, truncated examples, wall time and device)."""
    from skillmix.engine.encoding import encode_frame
    from skillmix.engine.hidden_states import pooled_states
    from skillmix.engine.modeling import load_model, select_runtime
    from skillmix.infra.config import complete
    from skillmix.infra.jobs import JobClock, atomic_file, write_json, write_parquet

    frame = pd.read_parquet(examples)
    if frame.empty:
        raise SkillmixInputError(f"RDS+: the {what} has no examples ({examples})")
    rds_cfg = complete("select.rds", rds_cfg)
    model_cfg = complete("model", model_cfg)
    model, tokenizer = load_model({**model_cfg, "lora": {**model_cfg["lora"], "enabled": False}})
    runtime = select_runtime(model_cfg["device"], model_cfg["precision"])
    clock = JobClock(runtime.device)
    model.to(runtime.device)
    encoded = encode_frame(tokenizer, frame, what, model_cfg["max_length"])
    pooled = pooled_states(
        model,
        runtime,
        tokenizer.pad_token_id,
        encoded.input_ids,
        batch_size=rds_cfg["batch_size"],
        pooling=rds_cfg["pooling"],
    )
    log.info("%s: %d examples pooled (%s), width %d", what, len(pooled), rds_cfg["pooling"], pooled.shape[1])
    with atomic_file(states) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, pooled)
    write_parquet(
        pd.DataFrame({"id": frame["id"].astype(str), "skill": frame["skill"].astype(str)}), index, stamp
    )
    extra = {"pooling": rds_cfg["pooling"], "rows": len(frame), "width": int(pooled.shape[1])}
    write_json(clock.metrics(**extra, examples=str(examples), truncated=encoded.truncated), info)


def scores_job(
    pool_path: str | os.PathLike,
    candidates: tuple[str | os.PathLike, str | os.PathLike],
    target: tuple[str | os.PathLike, str | os.PathLike],
    out: str | os.PathLike,
    tasks: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The rds_scores rule's job: each candidate's score per target skill (:func:`task_scores`) as
    the scores table (:func:`score_table`). `candidates` and `target` are (states .npy, index
    parquet) pairs; `tasks` the target skills the config names (each must have examples)."""
    from skillmix.infra.jobs import write_parquet

    pool = pd.read_parquet(pool_path)
    cand_states, cand_index = np.load(candidates[0]), pd.read_parquet(candidates[1])
    if cand_index["id"].astype(str).tolist() != pool["id"].astype(str).tolist():
        raise SkillmixInputError("RDS+: the candidates' hidden states and the pool list different examples")
    target_states, target_index = np.load(target[0]), pd.read_parquet(target[1])
    target_tasks = target_index["skill"].astype(str).tolist()
    order = list(dict.fromkeys([*(tasks or []), *target_tasks]))
    table = score_table(pool, task_scores(cand_states, target_states, target_tasks, order))
    write_parquet(table, out)
    return table
