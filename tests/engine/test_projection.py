"""The portable Rademacher projector (less.md §6): the closed rule, exactness and JL behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skillmix.engine.projection import RademacherProjector, mt19937_first_output, normalise_rows
from skillmix.infra.errors import SkillmixInputError

M = 2**31 - 1
A = 1132489760


def first_raw_numpy_bitgen(seed: int) -> int:
    """First MT19937 output via NumPy's bit generator with legacy seeding (a second code path)."""
    bg = np.random.MT19937()
    bg._legacy_seeding(seed)
    return int(bg.random_raw())


@pytest.mark.parametrize("seed", [0, 1, 1000, 100000, 2**32 - 1])
def test_block_seed_state_is_torch_mt19937_first_output(seed):
    s = mt19937_first_output(seed)
    assert s == first_raw_numpy_bitgen(seed)
    # torch exposes its MT19937 outputs only through random_(), which returns
    # ((out0 << 32) | out1) & (2^63 - 1): the top bit of out0 is lost, the other 31 must agree.
    g = torch.Generator().manual_seed(seed)
    r = torch.empty(1, dtype=torch.int64).random_(generator=g).item()
    assert r >> 32 == s & 0x7FFFFFFF


def test_hand_computed_entries_seed0_block0():
    proj = RademacherProjector(5, 128, seed=0)
    s = first_raw_numpy_bitgen(0)
    x0 = s % M or 1
    expected = [
        [1.0 if pow(A, row * 128 + col, M) * x0 % M < 1073741792 else -1.0 for col in range(128)]
        for row in range(5)
    ]
    assert proj.block(0).tolist() == expected
    # a later row range of a later block, addressed without generating the rows before it
    big = RademacherProjector(10_000, 256, seed=3, model_id=1)
    x0 = mt19937_first_output(3 + 1000 + 100000) % M or 1
    expected = [
        [1.0 if pow(A, row * 128 + col, M) * x0 % M < 1073741792 else -1.0 for col in range(128)]
        for row in range(9_997, 10_000)
    ]
    assert big.block(1, slice(9_997, None)).tolist() == expected


def test_deterministic_pm1_and_balanced():
    p1 = RademacherProjector(1000, 256, seed=7)
    p2 = RademacherProjector(1000, 256, seed=7)
    for i in range(2):
        b = p1.block(i)
        assert b.dtype == torch.float32 and b.shape == (1000, 128)
        assert torch.equal(b, p2.block(i))
        assert set(b.unique().tolist()) == {-1.0, 1.0}
        assert abs(b.mean().item()) < 4 / math.sqrt(b.numel())
    assert not torch.equal(p1.block(0), p1.block(1))
    assert not torch.equal(p1.block(0), RademacherProjector(1000, 256, seed=8).block(0))
    assert not torch.equal(p1.block(0), RademacherProjector(1000, 256, seed=7, model_id=1).block(0))
    assert p1.identity == {
        "kind": "rademacher-portable",
        "seed": 7,
        "model_id": 0,
        "input_dim": 1000,
        "output_dim": 256,
        "block": 128,
    }


def test_block_rows_smaller_than_input_gives_same_matrix():
    full = RademacherProjector(1000, 256, block_rows=65536)
    small = RademacherProjector(1000, 256, block_rows=37)
    for i in range(2):
        assert torch.equal(full.block(i), small.block(i))
        assert torch.equal(full.block(i, slice(100, 250)), small.block(i, slice(100, 250)))
    x = torch.randint(-3, 4, (5, 1000)).float()
    assert torch.equal(full.project(x), small.project(x))


def test_4096_is_prefix_of_8192():
    x = torch.randint(-3, 4, (3, 300)).float()
    y8 = RademacherProjector(300, 8192).project(x)
    y4 = RademacherProjector(300, 4096).project(x)
    assert torch.equal(y4, y8[:, :4096])


def dense_matrix(proj: RademacherProjector) -> torch.Tensor:
    return torch.cat([proj.block(i) for i in range(proj.n_blocks)], dim=1)


def test_project_equals_dense_and_is_additive_and_batch_independent():
    D = 777
    proj = RademacherProjector(D, 384, seed=0, block_rows=100)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(-4, 5, (6, D), generator=gen).float()
    whole = proj.project(x)
    assert whole.dtype == torch.float32 and whole.shape == (6, 384)
    assert torch.equal(whole, x @ dense_matrix(proj))
    for cuts in ([0, 400, D], [0, 1, 128, 129, 500, D], [0, 99, 100, 101, 300, 650, 776, D]):
        parts = sum(proj.project(x[:, a:b], row_offset=a) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
        assert torch.equal(parts, whole)
    one_at_a_time = torch.cat([proj.project(x[j : j + 1]) for j in range(x.shape[0])])
    assert torch.equal(one_at_a_time, whole)
    # low-precision inputs are accumulated in float32
    assert torch.equal(proj.project(x.half()), whole)
    assert torch.equal(proj.project(x.bfloat16()), whole)


def test_jl_cosines_within_four_sigma():
    D, d, pairs = 2000, 8192, 50
    rng = np.random.default_rng(0)
    cos = rng.uniform(-0.95, 0.95, pairs)
    u = rng.standard_normal((pairs, D))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = rng.standard_normal((pairs, D))
    w -= (w * u).sum(axis=1, keepdims=True) * u
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    v = cos[:, None] * u + np.sqrt(1 - cos[:, None] ** 2) * w
    proj = RademacherProjector(D, d, seed=0)
    y = normalise_rows(proj.project(torch.from_numpy(np.concatenate([u, v])).float())).double().numpy()
    got = (y[:pairs] * y[pairs:]).sum(axis=1)
    sigma = np.sqrt((1 + cos**2) / d)
    assert np.all(np.abs(got - cos) < 4 * sigma)


def test_normalise_rows():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [float("nan"), 1.0]])
    y = normalise_rows(x)
    assert torch.allclose(y[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(y[1], torch.zeros(2))
    assert torch.isnan(y[2]).all()


def test_bad_input():
    with pytest.raises(SkillmixInputError, match="multiple of 128"):
        RademacherProjector(10, 100)
    proj = RademacherProjector(10, 128)
    with pytest.raises(SkillmixInputError, match="outside"):
        proj.project(torch.zeros(2, 5), row_offset=6)
    with pytest.raises(SkillmixInputError, match="2-D"):
        proj.project(torch.zeros(10))
    with pytest.raises(SkillmixInputError, match="out of range"):
        proj.block(1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    proj = RademacherProjector(3000, 256, seed=0, block_rows=1000)
    x = torch.randint(-3, 4, (4, 3000)).float()
    assert torch.equal(proj.block(1, device="cuda").cpu(), proj.block(1))
    assert torch.equal(proj.project(x.cuda()).cpu(), proj.project(x))
