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
from skillmix.selection.shards import read_shard

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
READ_ROWS = 4096  # rows per read of a shard
MATCHES = ("mean", "max")  # how a candidate is compared with a target skill's examples


def skill_labels(target_skills: Sequence[str]) -> list[str]:
    """The distinct skill labels in order of first appearance: the columns of the per-skill scores."""
    return list(dict.fromkeys(target_skills))


def shard_layout(path: PathLike) -> tuple[tuple[int, int], np.dtype, int]:
    """(shape, dtype, byte offset of the data) of a 2-D C-order `.npy` shard, read from its header."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (OSError, ValueError) as e:
        raise SkillmixInputError(f"{path}: cannot read feature shard header ({e})") from e
    if len(shape) != 2 or fortran or dtype.hasobject:
        raise SkillmixInputError(f"{path}: feature shard must be a 2-D C-order numeric array, got {shape}")
    size = Path(path).stat().st_size
    if size < offset + shape[0] * shape[1] * dtype.itemsize:
        raise SkillmixInputError(f"{path}: feature shard is truncated ({size} bytes for shape {shape})")
    return (int(shape[0]), int(shape[1])), dtype, offset


class _ShardedRows:
    """Row ranges of a list of shards, read as if they were one array.

    Rows are read with positioned reads into a buffer the size of the request, not through a
    memory map, so the resident memory of a pass over the whole datastore stays one chunk.
    """

    def __init__(self, paths: Sequence[PathLike]) -> None:
        self.paths = [Path(p) for p in paths]
        self.layouts = [shard_layout(p) for p in self.paths]
        dims = {shape[1] for shape, _, _ in self.layouts}
        if len(dims) > 1:
            raise SkillmixInputError(
                f"candidate shards {[str(p) for p in self.paths]} differ in width: {dims}"
            )
        self.d = dims.pop() if dims else None
        self.offsets = np.cumsum([0] + [shape[0] for shape, _, _ in self.layouts])
        self.n = int(self.offsets[-1])
        self._buf: tuple[np.ndarray, np.ndarray] | None = None

    def dot(self, start: int, stop: int, mat: np.ndarray) -> np.ndarray:
        """rows[start:stop] @ mat in float32, for a float32 mat [d, k] (only these rows are read).

        Rows are read READ_ROWS at a time into reused buffers (stored dtype, then float32), so
        memory stays READ_ROWS × d × (itemsize + 4) bytes plus the [stop − start, k] result,
        however long the range.
        """
        out = np.empty((stop - start, mat.shape[1]), dtype=np.float32)
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        for s in range(max(first, 0), len(self.paths)):
            lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
            if lo >= stop:
                break
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            if b <= a:
                continue
            (_, d), dtype, offset = self.layouts[s]
            raw, f32 = self._buffers(dtype, d)
            with open(self.paths[s], "rb") as f:
                f.seek(offset + a * d * dtype.itemsize)
                for pos in range(a, b, READ_ROWS):
                    k = min(READ_ROWS, b - pos)
                    if f.readinto(memoryview(raw[:k]).cast("B")) != raw[:k].nbytes:
                        raise SkillmixInputError(f"{self.paths[s]}: feature shard ended early")
                    # torch's vectorised float16 -> float32 copy is several times faster than numpy's
                    torch.from_numpy(f32[:k]).copy_(torch.from_numpy(raw[:k]))
                    np.matmul(f32[:k], mat, out=out[lo + pos - start : lo + pos + k - start])
        return out

    def _buffers(self, dtype: np.dtype, d: int) -> tuple[np.ndarray, np.ndarray]:
        if self._buf is None or self._buf[0].dtype != dtype or self._buf[0].shape[1] != d:
            self._buf = (np.empty((READ_ROWS, d), dtype=dtype), np.empty((READ_ROWS, d), dtype=np.float32))
        return self._buf


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
    Memory: candidate rows are read READ_ROWS at a time into two reused buffers (6·READ_ROWS·d
    bytes for float16 shards, 192 MiB at d = 8192), plus the targets and the [N, skills]
    result; chunk_rows only sets how many rows one pass over the checkpoints covers (default: the
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
    cands: dict[Hashable, _ShardedRows] = {}
    # per checkpoint, float32: the skill-mean target rows [S, d] ("mean"), or every target row [M, d]
    target_rows: dict[Hashable, np.ndarray] = {}
    for c in ckpts:
        w = float(weights[c])
        if not math.isfinite(w):
            raise SkillmixInputError(f"influence scores: weight of checkpoint {c} is not finite: {w}")
        cands[c] = _ShardedRows(candidate_shards[c])
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
    cands: Mapping[Hashable, _ShardedRows],
    target_rows: Mapping[Hashable, np.ndarray],
    weights: Mapping[Hashable, float],
    col: np.ndarray,
    n_labels: int,
    chunk_rows: int,
    match: str,
) -> np.ndarray:
    """[N, n_labels] float32: per candidate and skill, the checkpoint-weighted dot products with the
    skill's target rows (their max over the skill's examples with `match` "max"), `chunk_rows`
    candidates per pass over the checkpoints."""
    ckpts = list(cands)
    n = cands[ckpts[0]].n
    per_skill = np.empty((n, n_labels), dtype=np.float32)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        acc = np.zeros((stop - start, target_rows[ckpts[0]].shape[0]), dtype=np.float32)
        for c in ckpts:
            acc += np.float32(weights[c]) * cands[c].dot(start, stop, np.ascontiguousarray(target_rows[c].T))
        if match == "max":
            acc = np.stack([acc[:, col == j].max(axis=1) for j in range(n_labels)], axis=1)
        per_skill[start:stop] = acc
    return per_skill


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
    """The shard indexes in shard order, as one frame (columns id, skill)."""
    frames = [pd.read_parquet(p) for p in paths]
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
