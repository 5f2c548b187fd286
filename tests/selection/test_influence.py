"""LESS datastore shards, streaming influence scores and selection against dense computations."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from skillmix.infra.errors import SkillmixInputError
from skillmix.selection import influence
from skillmix.selection.influence import influence_scores, skill_labels
from skillmix.selection.ranking import select_top
from skillmix.selection.shards import read_shard, write_shard
from skillmix.selection.warmup import checkpoint_weights

N, D = 53, 24
CKPTS = ["ckpt-105", "ckpt-211"]
WEIGHTS = {"ckpt-105": 0.6, "ckpt-211": 0.4}
# three skills of unequal size, not contiguous
SUBTASKS = ["b", "a", "b", "c", "a", "b", "c", "b", "a", "b", "b", "c"]


def write_sharded(tmp_path, name, feats, cuts):
    paths = []
    for s, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        p = tmp_path / f"{name}-{s}.npy"
        write_shard(feats[a:b], p)
        paths.append(p)
    return paths


@pytest.fixture()
def fixture(tmp_path):
    gen = torch.Generator().manual_seed(0)
    cand = {c: torch.randn(N, D, generator=gen) for c in CKPTS}
    targ = {c: torch.randn(len(SUBTASKS), D, generator=gen) for c in CKPTS}
    shards = {
        CKPTS[0]: write_sharded(tmp_path, "c0", cand[CKPTS[0]], [0, 3, 40, N]),
        CKPTS[1]: write_sharded(tmp_path, "c1", cand[CKPTS[1]], [0, 20, 21, N]),  # other boundaries
    }
    targets = {}
    for c in CKPTS:
        write_shard(targ[c], tmp_path / f"t-{c}.npy")
        targets[c] = tmp_path / f"t-{c}.npy"
    return tmp_path, cand, targ, shards, targets


def dense(cand16, targ16):
    """Direct LESS score from the stored (float16-rounded) values, in float64."""
    labels = skill_labels(SUBTASKS)
    s = sum(
        WEIGHTS[c] * np.einsum("nd,md->nm", cand16[c].astype(np.float64), targ16[c].astype(np.float64))
        for c in CKPTS
    )
    lab = np.array(SUBTASKS)
    per = np.stack([s[:, lab == j].mean(axis=1) for j in labels], axis=1)
    return per.max(axis=1), per


def stored(paths):
    return np.concatenate([read_shard(p) for p in paths]).astype(np.float32)


def test_write_read_shard(tmp_path):
    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    write_shard(x, tmp_path / "s.npy")
    arr = read_shard(tmp_path / "s.npy")
    assert isinstance(arr, np.memmap) and arr.dtype == np.float16 and arr.shape == (2, 3)
    np.testing.assert_array_equal(arr, np.array([[0.6, 0.8, 0], [0, 0, 1]], dtype=np.float16))
    assert not isinstance(read_shard(tmp_path / "s.npy", mmap=False), np.memmap)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npy"]  # no temporary left behind


def test_scores_equal_dense(fixture):
    _, _, _, shards, targets = fixture
    cand16 = {c: stored(shards[c]) for c in CKPTS}
    targ16 = {c: read_shard(targets[c]).astype(np.float32) for c in CKPTS}
    scores, per = influence_scores(shards, targets, SUBTASKS, WEIGHTS)
    ref, ref_per = dense(cand16, targ16)
    assert scores.shape == (N,) and per.shape == (N, 3)
    assert skill_labels(SUBTASKS) == ["b", "a", "c"]
    np.testing.assert_allclose(per, ref_per, atol=1e-5)
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    # in-memory targets give the same result as target paths
    scores2, _ = influence_scores(shards, targ16, SUBTASKS, WEIGHTS)
    np.testing.assert_array_equal(scores2, scores)


@pytest.mark.parametrize("read_rows", [3, 4096])
def test_sharding_and_chunking_do_not_change_scores(fixture, monkeypatch, read_rows):
    tmp_path, cand, _, _, targets = fixture
    monkeypatch.setattr(influence, "READ_ROWS", read_rows)  # several reads per shard and chunk
    results = []
    for cuts in ([0, N], [0, 30, N], [0, 1, 2, 17, 50, N]):
        tag = len(cuts)
        shards = {c: write_sharded(tmp_path, f"{c}-{tag}-{read_rows}", cand[c], cuts) for c in CKPTS}
        for chunk in (7, 65536):
            results.append(influence_scores(shards, targets, SUBTASKS, WEIGHTS, chunk_rows=chunk))
    # BLAS chooses its kernel by the shape of a read, so a score may move in its last bit
    # (float32 ulp ~1e-8 here), never more
    for scores, per in results[1:]:
        np.testing.assert_allclose(scores, results[0][0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(per, results[0][1], rtol=1e-6, atol=1e-7)
    targ16 = {c: read_shard(targets[c]).astype(np.float32) for c in CKPTS}
    cand16 = {c: stored(write_sharded(tmp_path, f"{c}-dense-{read_rows}", cand[c], [0, N])) for c in CKPTS}
    np.testing.assert_allclose(results[0][0], dense(cand16, targ16)[0], atol=1e-5)


def test_max_match_scores_by_the_best_single_target_example(fixture):
    _, _, _, shards, targets = fixture
    cand16 = {c: stored(shards[c]) for c in CKPTS}
    targ16 = {c: read_shard(targets[c]).astype(np.float64) for c in CKPTS}
    s = sum(WEIGHTS[c] * cand16[c].astype(np.float64) @ targ16[c].T for c in CKPTS)
    lab = np.array(SUBTASKS)
    want = np.stack([s[:, lab == j].max(axis=1) for j in skill_labels(SUBTASKS)], axis=1)
    for chunk in (5, 65536):
        scores, per = influence_scores(shards, targets, SUBTASKS, WEIGHTS, chunk_rows=chunk, match="max")
        np.testing.assert_allclose(per, want, atol=1e-5)
        np.testing.assert_allclose(scores, want.max(axis=1), atol=1e-5)
    mean_scores, _ = influence_scores(shards, targets, SUBTASKS, WEIGHTS)
    assert (scores > mean_scores).all()  # a max over a skill's examples exceeds their mean here
    # two opposite target examples: their mean is zero, the max still finds the candidate
    one = {c: np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32) for c in CKPTS}
    cands = {c: [fixture[0] / f"pm-{c}.npy"] for c in CKPTS}
    for c in CKPTS:
        write_shard(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), cands[c][0])
    mean, _ = influence_scores(cands, one, ["x", "x"], WEIGHTS)
    best, _ = influence_scores(cands, one, ["x", "x"], WEIGHTS, match="max")
    np.testing.assert_allclose(mean, [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(best, [1.0, 0.0], atol=1e-6)
    with pytest.raises(SkillmixInputError, match="match must be one of"):
        influence_scores(shards, targets, SUBTASKS, WEIGHTS, match="median")


def test_nan_row_scores_minus_inf_and_is_not_selected(fixture, caplog):
    tmp_path, cand, _, _, targets = fixture
    feats = {c: cand[c].clone() for c in CKPTS}
    feats[CKPTS[1]][5] = float("nan")  # no supervised tokens at one checkpoint
    shards = {c: write_sharded(tmp_path, f"nan-{c}", feats[c], [0, 10, N]) for c in CKPTS}
    with caplog.at_level(logging.WARNING, logger="skillmix.selection.influence"):
        scores, per = influence_scores(shards, targets, SUBTASKS, WEIGHTS, chunk_rows=4)
    assert "1 candidate rows have non-finite features" in caplog.text
    assert scores[5] == -np.inf and np.all(per[5] == -np.inf)
    assert np.isfinite(np.delete(scores, 5)).all()
    ids = [f"id{i:03d}" for i in range(N)]
    assert 5 not in select_top(ids, scores, k=N - 1)
    assert select_top(ids, scores, k=N - 1) == select_top(ids, scores, k=N)  # excluded, not appended


def test_select_top_order_ties_and_nan():
    ids = ["e", "c", "a", "d", "b", "f"]
    scores = np.array([0.5, 0.9, 0.5, np.nan, 0.5, -np.inf])
    assert select_top(ids, scores, k=4) == [1, 2, 4, 0]  # 0.9, then the 0.5 ties by id a < b < e
    assert select_top(ids, scores, k=10) == [1, 2, 4, 0]
    assert select_top(ids, scores, fraction=0.01) == [1]  # at least one
    rng = np.random.default_rng(0)
    s = rng.standard_normal(100)
    top = select_top([f"x{i:03d}" for i in range(100)], s, fraction=0.05)
    assert top == np.argsort(-s)[:5].tolist()
    with pytest.raises(SkillmixInputError, match="exactly one"):
        select_top(ids, scores)
    with pytest.raises(SkillmixInputError, match="ids but scores"):
        select_top(ids[:2], scores)


def test_checkpoint_weights_readme_values():
    readme = [1.6877e-5, 1.2859e-5, 7.7030e-6, 2.5616e-6]
    np.testing.assert_allclose(
        checkpoint_weights([[v] for v in readme]), [0.42192, 0.32147, 0.19257, 0.06404], atol=1e-5
    )
    # means of per-step values, however many steps an epoch has
    w = checkpoint_weights([[1.0, 3.0], [2.0, 2.0, 2.0, 2.0]])
    assert w == [0.5, 0.5]
    with pytest.raises(SkillmixInputError, match="epoch 1"):
        checkpoint_weights([[1.0], []])


def test_bad_inputs(fixture):
    _, _, targ, shards, targets = fixture
    with pytest.raises(SkillmixInputError, match="checkpoints differ"):
        influence_scores(shards, targets, SUBTASKS, {CKPTS[0]: 1.0})
    with pytest.raises(SkillmixInputError, match="skill labels"):
        influence_scores(shards, targets, SUBTASKS[:-1], WEIGHTS)
    bad = {c: targ[c].numpy().copy() for c in CKPTS}
    bad[CKPTS[0]][2] = np.nan
    with pytest.raises(SkillmixInputError, match=r"non-finite rows \[2\]"):
        influence_scores(shards, bad, SUBTASKS, WEIGHTS)
    with pytest.raises(SkillmixInputError, match="row counts differ"):
        influence_scores(
            {CKPTS[0]: shards[CKPTS[0]], CKPTS[1]: shards[CKPTS[1]][:2]}, targets, SUBTASKS, WEIGHTS
        )
