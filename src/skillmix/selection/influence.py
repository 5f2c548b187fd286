"""LESS's influence scores: every candidate of the gradient datastore against the target, read
from the shard files a few thousand rows at a time.

The datastore (:mod:`skillmix.selection.datastore`) holds, per warm-up checkpoint and set
("candidates" | "target"), float16 `.npy` shards of unit rows [rows, d], each with a Parquet
index of its example ids. Scores follow LESS (Xia et al., 2024): for candidate z,

    score(z) = max_j (1/|D_j|) Σ_{z' ∈ D_j} Σ_ckpt w_ckpt · cos(Γ̂_ckpt(z), ĝ_ckpt(z'))

the mean of cosines within each target skill j, then the max over skills. Rows are unit, so the
cosine is a dot product; since the mean is linear it equals the dot product with the skill's mean
target row (not renormalised), which is how it is computed here (float32).

`match="max"` (an option, not LESS) replaces the mean over D_j by the max over its examples:
a candidate scores by the single target example it matches best, so a target whose examples
point different ways (two answers of a classification task) is not reduced to their mean.

:func:`influence_scores` computes the scores from the shards; :func:`score_datastore` joins the
shard indexes to the candidate pool and gives every pool row its scores and a status: the
`influence` rule's table, which LESS's selector ranks (:mod:`skillmix.selection.less`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.selection.shards import RowPrefetcher, ShardedRows, read_shard

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
READ_ROWS = 4096  # rows per read of a shard
CAST_ROWS = 256  # rows cast to float32 at a time (8 MiB at d = 8192: stays in cache for the product)
PREFETCH = 2  # reads held ready ahead of the scoring (each READ_ROWS × d stored values)
MATCHES = ("mean", "max")  # how a candidate is compared with a target skill's examples


def skill_labels(target_skills: Sequence[str]) -> list[str]:
    """The distinct skill labels in order of first appearance: the columns of the per-skill scores."""
    return list(dict.fromkeys(target_skills))


def influence_scores(
    candidate_shards: Mapping[Hashable, Sequence[PathLike]],
    target: Mapping[Hashable, np.ndarray | PathLike],
    target_skills: Sequence[str],
    weights: Mapping[Hashable, float],
    chunk_rows: int | None = None,
    match: str = "mean",
) -> tuple[np.ndarray, np.ndarray]:
    """LESS scores of every candidate row, streamed shard by shard.

    candidate_shards: per checkpoint, the candidate shard paths in row order (shard boundaries may
    differ between checkpoints; the total row count must not). target: per checkpoint, the target
    features [M, d] (array or `.npy` path), rows labelled by target_skills (any labels, any order,
    unequal sizes). weights: per checkpoint, used as given (see `checkpoint_weights`).

    Returns (scores [N] float32, per_skill [N, n_skills] float32); the columns of per_skill
    follow `skill_labels(target_skills)`. Candidate rows with a non-finite feature in any
    checkpoint (e.g. a NaN loss) get −inf in both and are logged; they are never selected first.
    Memory: candidate rows are read READ_ROWS at a time, by a thread that stays PREFETCH reads
    ahead of the scoring, into PREFETCH + 1 reused buffers, and cast to float32 CAST_ROWS at a
    time ((PREFETCH + 1)·READ_ROWS·d·2 + CAST_ROWS·d·4 bytes for float16 shards, 200 MiB at
    d = 8192), plus the targets and the [N, skills] result; chunk_rows only sets how many rows one
    pass over the checkpoints covers (default: the
    schema's `select.influence.chunk_rows`). `match` "mean" is LESS's score; "max" scores each
    skill by the best checkpoint-weighted cosine with one of its target examples (then
    [chunk_rows, M] scores are held per pass).
    """
    ckpts, chunk_rows = _check_arguments(candidate_shards, target, weights, chunk_rows, match)
    labels = skill_labels(target_skills)
    if not labels:
        raise SkillmixInputError("influence scores: no target rows / skill labels given")
    label_index = {lab: j for j, lab in enumerate(labels)}
    col = np.array([label_index[lab] for lab in target_skills])
    cands: dict[Hashable, ShardedRows] = {}
    # per checkpoint, float32: the skill-mean target rows [S, d] ("mean"), or every target row [M, d]
    target_rows: dict[Hashable, np.ndarray] = {}
    for c in ckpts:
        w = float(weights[c])
        if not math.isfinite(w):
            raise SkillmixInputError(f"influence scores: weight of checkpoint {c} is not finite: {w}")
        cands[c] = ShardedRows(candidate_shards[c])
        target_rows[c] = _target_rows(target[c], col, len(labels), match, cands[c].d, c)
    sizes = {c: cands[c].n for c in ckpts}
    if len(set(sizes.values())) > 1:
        raise SkillmixInputError(
            f"influence scores: candidate row counts differ between checkpoints: {sizes}"
        )
    per_skill = _per_skill_scores(cands, target_rows, weights, col, len(labels), chunk_rows, match)
    return _exclude_non_finite(per_skill), per_skill


def _check_arguments(
    candidate_shards: Mapping[Hashable, Sequence[PathLike]],
    target: Mapping[Hashable, np.ndarray | PathLike],
    weights: Mapping[Hashable, float],
    chunk_rows: int | None,
    match: str,
) -> tuple[list[Hashable], int]:
    """The checkpoints (the same in candidates, targets and weights) and the rows of one pass."""
    if match not in MATCHES:
        raise SkillmixInputError(f"influence scores: match must be one of {MATCHES}, got {match!r}")
    ckpts = list(candidate_shards)
    if not ckpts:
        raise SkillmixInputError("influence scores: no checkpoints given")
    if set(target) != set(ckpts) or set(weights) != set(ckpts):
        raise SkillmixInputError(
            f"influence scores: checkpoints differ between candidates {sorted(map(str, ckpts))}, "
            f"targets {sorted(map(str, target))} and weights {sorted(map(str, weights))}"
        )
    if chunk_rows is None:
        chunk_rows = complete("select.influence", None)["chunk_rows"]
    if int(chunk_rows) <= 0:
        raise SkillmixInputError(f"influence scores: chunk_rows must be positive, got {chunk_rows}")
    return ckpts, int(chunk_rows)


def _target_rows(
    features: np.ndarray | PathLike, col: np.ndarray, n_labels: int, match: str, d: int | None, ckpt: Hashable
) -> np.ndarray:
    """One checkpoint's target features (rows labelled by skill index `col`), checked against the
    candidates' width `d`, as the float32 rows candidates are compared with: the mean row of each
    skill ("mean"), every row ("max")."""
    t = read_shard(features, mmap=False) if isinstance(features, str | os.PathLike) else np.asarray(features)
    t = t.astype(np.float64)
    name = f"target features of checkpoint {ckpt}"
    if t.ndim != 2 or t.shape[0] != len(col):
        raise SkillmixInputError(
            f"influence scores: {name} have shape {t.shape}, expected [{len(col)} (skill labels), d]"
        )
    bad = np.flatnonzero(~np.isfinite(t).all(axis=1))
    if bad.size:
        raise SkillmixInputError(f"influence scores: {name} have non-finite rows {bad[:10].tolist()}")
    if d is not None and t.shape[1] != d:
        raise SkillmixInputError(f"influence scores: {name} have width {t.shape[1]}, candidates have {d}")
    if match == "max":
        return t.astype(np.float32)  # every target row is matched on its own
    sums = np.zeros((n_labels, t.shape[1]))
    np.add.at(sums, col, t)
    counts = np.bincount(col, minlength=n_labels)
    return (sums / counts[:, None]).astype(np.float32)


def _per_skill_scores(
    cands: Mapping[Hashable, ShardedRows],
    target_rows: Mapping[Hashable, np.ndarray],
    weights: Mapping[Hashable, float],
    col: np.ndarray,
    n_labels: int,
    chunk_rows: int,
    match: str,
) -> np.ndarray:
    """[N, n_labels] float32: per candidate and skill, the checkpoint-weighted dot products with the
    skill's target rows (their max over the skill's examples with `match` "max"), `chunk_rows`
    candidates per pass over the checkpoints.

    The candidate rows are read READ_ROWS at a time by a background thread (`RowPrefetcher`,
    PREFETCH reads ahead), so reading the next rows overlaps scoring the current ones; the
    scoring runs on one torch thread fewer than set, leaving a core to the reader.
    """
    ckpts = list(cands)
    n = cands[ckpts[0]].n
    per_skill = np.empty((n, n_labels), dtype=np.float32)
    chunks = [(a, min(a + chunk_rows, n)) for a in range(0, n, chunk_rows)]
    mats = {c: np.ascontiguousarray(target_rows[c].T) for c in ckpts}
    plan = [(a, z, c) for a, z in chunks for c in ckpts]
    reads = (r for a, z, c in plan for r in cands[c].reads(a, z, READ_ROWS))
    scratch: dict[int, torch.Tensor] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    try:
        with RowPrefetcher(reads, READ_ROWS, depth=PREFETCH) as prefetcher:
            blocks = iter(prefetcher)
            acc = np.empty((0, 0), dtype=np.float32)
            for start, stop, c in plan:
                if c == ckpts[0]:
                    acc = np.zeros((stop - start, mats[c].shape[1]), dtype=np.float32)
                part = np.empty_like(acc)
                for want in cands[c].reads(start, stop, READ_ROWS):
                    read, rows = next(blocks)
                    if read != want:  # the reader follows the same plan; a mismatch is a bug
                        raise RuntimeError(f"shard reads out of order: {read} instead of {want}")
                    _dot_rows(rows, mats[c], part[read.out : read.out + read.rows], scratch)
                acc += np.float32(weights[c]) * part
                if c == ckpts[-1]:
                    if match == "max":
                        acc = np.stack([acc[:, col == j].max(axis=1) for j in range(n_labels)], axis=1)
                    per_skill[start:stop] = acc
    finally:
        torch.set_num_threads(threads)
    return per_skill


def _dot_rows(rows: np.ndarray, mat: np.ndarray, out: np.ndarray, scratch: dict[int, torch.Tensor]) -> None:
    """out = rows @ mat in float32, the stored rows cast CAST_ROWS at a time into a reused buffer.

    Cast and product both run in torch (one thread pool: alternating numpy's BLAS threads with
    torch's leaves each pool spinning while the other works); torch's vectorised float16 → float32
    copy is also several times faster than numpy's.
    """
    m, o = torch.from_numpy(mat), torch.from_numpy(out)
    if rows.dtype == np.float32:
        torch.mm(torch.from_numpy(rows), m, out=o)
        return
    d = rows.shape[1]
    if d not in scratch:
        scratch[d] = torch.empty((CAST_ROWS, d), dtype=torch.float32)
    f32 = scratch[d]
    for i in range(0, rows.shape[0], CAST_ROWS):
        k = min(CAST_ROWS, rows.shape[0] - i)
        f32[:k].copy_(torch.from_numpy(rows[i : i + k]))
        torch.mm(f32[:k], m, out=o[i : i + k])


def _exclude_non_finite(per_skill: np.ndarray) -> np.ndarray:
    """Set the rows of `per_skill` with a non-finite score to −inf (logged); the max over skills."""
    bad = ~np.isfinite(per_skill).all(axis=1)
    per_skill[bad] = -np.inf
    scores = per_skill.max(axis=1) if len(per_skill) else np.empty(0, dtype=np.float32)
    if bad.any():
        rows = np.flatnonzero(bad)
        log.warning(
            "influence scores: %d candidate rows have non-finite features (score -inf, never selected "
            "first); first rows: %s",
            rows.size,
            rows[:20].tolist(),
        )
    return scores


STATUS_SCORED = "scored"
STATUS_NO_ANSWER = "no_answer_tokens"
STATUS_NON_FINITE = "non_finite_feature"


def read_index(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The shard indexes in shard order, as one frame (columns id, skill); a missing or unreadable
    index is a SkillmixInputError naming it."""
    frames = []
    for p in paths:
        try:
            frames.append(pd.read_parquet(p, columns=["id", "skill"]))
        except (OSError, ValueError, KeyError) as e:
            raise SkillmixInputError(f"{p}: cannot read shard index ({e})") from e
    if not frames:
        raise SkillmixInputError("no shard index files given")
    return pd.concat(frames, ignore_index=True)[["id", "skill"]]


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
    chunk_rows: int | None = None,
    match: str = "mean",
    per_example: bool = False,
) -> pd.DataFrame:
    """LESS scores of every pool row: columns id, skill, score, status, then one score column per
    target skill (`chunk_rows` and `match` as in :func:`influence_scores`), and with
    `per_example` one column `example_<target id>` per target example (its checkpoint-weighted
    cosine with the candidate; a second pass over the datastore).

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
    scores, per_skill = influence_scores(
        candidate_shards, targets, targ["skill"].tolist(), weights, chunk_rows=chunk_rows, match=match
    )
    skills = list(dict.fromkeys(targ["skill"]))
    scored = pd.DataFrame({"id": cand["id"].to_numpy(), "score": scores})
    for j, s in enumerate(skills):
        scored[f"score_{s}"] = per_skill[:, j]
    example_cols = []
    if per_example:
        example_cols = [f"example_{i}" for i in targ["id"]]
        _, each = influence_scores(
            candidate_shards, targets, example_cols, weights, chunk_rows=chunk_rows, match="max"
        )
        scored = pd.concat([scored, pd.DataFrame(each, columns=example_cols)], axis=1)
    scored["status"] = np.where(np.isfinite(scores), STATUS_SCORED, STATUS_NON_FINITE)
    out = pool[["id", "skill"]].merge(scored, on="id", how="left", validate="one_to_one")
    missing = out["status"].isna()
    out.loc[missing, "status"] = STATUS_NO_ANSWER
    score_cols = ["score", *[f"score_{s}" for s in skills], *example_cols]
    out[score_cols] = out[score_cols].fillna(-np.inf).astype(np.float32)
    if missing.any():
        log.warning(
            "%d pool example(s) have no gradient features (no answer tokens); score -inf", int(missing.sum())
        )
    return out[["id", "skill", "score", "status", *score_cols[1:]]]


def read_weights(path: str | os.PathLike) -> dict[str, float]:
    """Checkpoint name -> weight from the warm-up's weights JSON."""
    data = json.loads(Path(path).read_text())
    return {str(k): float(v) for k, v in data["weights"].items()}
