"""LESS data selection: epochs, warm-up checkpoints, the gradient datastore, scores, selection, targets."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from gradient_oracles import example_gradients
from safetensors.torch import load_file

from skillmix.data.sources import COLUMNS
from skillmix.data.sources.lego import generate_lego
from skillmix.engine.encoding import IGNORE, EncodedSet, encode_frame
from skillmix.engine.lora_gradients import lora_parameters, optimizer_moments
from skillmix.engine.modeling import load_model
from skillmix.engine.projection import RademacherProjector
from skillmix.engine.resume import trainable_state
from skillmix.engine.sampling import EpochSampler
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import parse_scatteritem, shard_range
from skillmix.selection.datastore import build_shard, gradient_feature_sets, gradient_features
from skillmix.selection.epochs import epoch_settings
from skillmix.selection.influence import STATUS_NO_ANSWER, STATUS_NON_FINITE, STATUS_SCORED, score_datastore
from skillmix.selection.less import select_examples
from skillmix.selection.pool import warmup_indices
from skillmix.selection.random import random_examples
from skillmix.selection.ranking import balanced_top
from skillmix.selection.selected import answer_composition, composition
from skillmix.selection.selector import selection_size
from skillmix.selection.shards import read_shard, write_shard
from skillmix.selection.targets import targets_from_files, targets_from_slices
from skillmix.selection.warmup import load_epoch_checkpoint, warmup_from_pool

MODEL = {
    "kind": "tiny",
    "seed": 0,
    "tiny": {
        "architecture": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_layers": 1,
        "num_heads": 2,
        "max_positions": 96,
    },
    "max_length": 96,
    "device": "cpu",
    "precision": "fp32",
}
LORA = {"r": 4, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
LR = 1e-2
# 24 pool rows, fraction 0.5 -> 12 warm-up rows, batch 4 -> 3 steps per epoch, 2 epochs -> 6 steps;
# warm-up steps ceil(0.1 * 6) = 1, so the linear schedule's factors are 0, 1, .8, .6, .4, .2.
WARMUP = {
    "fraction": 0.5,
    "seed": 3,
    "batch_size": 4,
    "lr": LR,
    "warmup_ratio": 0.1,
    "weight_decay": 0.0,
}
SCHEDULE = [0.0, 1.0, 0.8, 0.6, 0.4, 0.2]
SPE = 3  # steps per epoch
REPO = Path(__file__).resolve().parents[2]


def lego_pool(n_vars: int = 3, per_skill: int = 8) -> pd.DataFrame:
    return generate_lego(n_vars, per_skill, 0).examples[COLUMNS]


def run_warmup(epoch_dirs, resume_dir=None, stop_after=None):
    torch.manual_seed(0)  # peft draws the LoRA A init from the global generator
    return warmup_from_pool(MODEL, LORA, WARMUP, lego_pool(), epoch_dirs, resume_dir, stop_after)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    root = tmp_path_factory.mktemp("warmup")
    dirs = [root / "epoch-1", root / "epoch-2"]
    result, weights, mean_lrs, subset = run_warmup(dirs)
    return dirs, result, weights, mean_lrs, subset


def encoded_pool(tok, n: int = 6, start: int = 0) -> tuple[EncodedSet, list[str]]:
    frame = lego_pool().iloc[start : start + n]
    return encode_frame(tok, frame, "pool", MODEL["max_length"]), frame["skill"].tolist()


def unit(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float64)
    return x / x.norm(dim=1, keepdim=True)


# --- EpochSampler -------------------------------------------------------------------------------


def test_epoch_sampler_visits_every_example_once_per_epoch() -> None:
    sizes = [4, 7, 3]  # 14 examples
    sampler = EpochSampler(["a", "b", "c"], sizes, seed=5, batch_size=4)
    assert sampler.steps_per_epoch == math.ceil(14 / 4) == 4
    all_pairs = {(s, i) for s, n in enumerate(sizes) for i in range(n)}
    orders = []
    for epoch in range(3):
        batches = [sampler.sample(epoch * 4 + k + 1, 4) for k in range(4)]
        assert [len(b) for b in batches] == [4, 4, 4, 2]  # the last batch of an epoch is short
        flat = [p for b in batches for p in b]
        assert len(flat) == 14 and set(flat) == all_pairs
        assert all(0 <= i < sizes[s] for s, i in flat)
        assert sampler.epoch_of(epoch * 4 + 1) == sampler.epoch_of(epoch * 4 + 4) == epoch
        orders.append(flat)
    assert orders[0] != orders[1] != orders[2]  # a fresh order every epoch


def test_epoch_sampler_batches_are_a_function_of_the_step() -> None:
    def batches(seed: int, steps) -> list:
        sampler = EpochSampler(["a", "b"], [5, 6], seed=seed, batch_size=3)
        return [sampler.sample(s, 3) for s in steps]

    forward = batches(1, range(1, 13))
    assert forward == batches(1, range(1, 13))
    # out of order (as after a resume with a fresh sampler): the same batch for every step
    assert batches(1, range(12, 0, -1)) == forward[::-1]
    assert batches(1, [9]) == [forward[8]]
    assert batches(2, range(1, 13)) != forward
    with pytest.raises(SkillmixInputError):
        EpochSampler(["a"], [3], seed=0, batch_size=0)


# --- warm-up subset and settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction", "k"), [(100, 0.05, 5), (270, 0.05, 13), (10, 0.01, 1), (7, 1.0, 7)]
)
def test_warmup_indices(n, fraction, k) -> None:
    rows = warmup_indices(n, fraction, seed=42)
    assert len(rows) == k == max(1, int(fraction * n))
    np.testing.assert_array_equal(rows, np.random.RandomState(42).permutation(n)[:k])
    assert len(set(rows.tolist())) == k
    np.testing.assert_array_equal(warmup_indices(n, fraction, seed=42), rows)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_warmup_indices_bad_fraction(fraction) -> None:
    with pytest.raises(SkillmixInputError, match="fraction"):
        warmup_indices(10, fraction, seed=0)


def test_epoch_settings() -> None:
    s = epoch_settings({"batch_size": 4, "warmup_ratio": 0.1, "epochs": 3, "lr": 1e-3}, 10)
    assert (s.steps, s.batch_size, s.warmup_steps, s.resume_every) == (9, 4, 1, 3)
    assert s.lr == 1e-3 and s.schedule == "linear"
    s = epoch_settings({"batch_size": 32, "warmup_ratio": 0.03}, 13533, epochs=4)  # LESS at batch 32
    assert s.steps == 4 * math.ceil(13533 / 32) == 1692
    assert s.warmup_steps == math.ceil(0.03 * 1692) == 51
    assert s.resume_every == 423
    s = epoch_settings({"batch_size": 8, "warmup_ratio": 0.5, "epochs": 2}, 8)
    assert (s.steps, s.warmup_steps, s.resume_every) == (2, 1, 1)
    with pytest.raises(SkillmixInputError, match="epochs"):
        epoch_settings({"batch_size": 4}, 10, epochs=0)


# --- warm-up ------------------------------------------------------------------------------------


def test_warmup_checkpoints_and_weights(warm) -> None:
    dirs, result, weights, mean_lrs, subset = warm
    pool = lego_pool()
    rows = warmup_indices(len(pool), WARMUP["fraction"], WARMUP["seed"])
    assert subset["id"].tolist() == pool["id"].iloc[rows].tolist() and len(subset) == 12
    assert result.completed and result.steps["step"].tolist() == list(range(1, 7))
    np.testing.assert_allclose(result.steps["lr"], [LR * f for f in SCHEDULE], rtol=1e-12)
    per_epoch = [result.steps["lr"].iloc[e * SPE : (e + 1) * SPE].mean() for e in range(2)]
    np.testing.assert_allclose(mean_lrs, per_epoch, rtol=1e-12)
    np.testing.assert_allclose(mean_lrs, [0.6 * LR, 0.4 * LR], rtol=1e-12)
    np.testing.assert_allclose(weights, np.array(per_epoch) / sum(per_epoch), rtol=1e-12)
    np.testing.assert_allclose(weights, [0.6, 0.4], rtol=1e-12)
    for e, d in enumerate(dirs, start=1):
        assert {p.name for p in d.iterdir()} == {
            "adapter_model.safetensors",
            "adapter_config.json",
            "optimizer.safetensors",
            "optimizer.json",
            "checkpoint.json",
        }
        meta = json.loads((d / "checkpoint.json").read_text())
        assert (meta["epoch"], meta["step"], meta["steps_in_epoch"]) == (e, e * SPE, SPE)
        assert meta["mean_lr"] == pytest.approx(mean_lrs[e - 1], rel=1e-12)
    a1, a2 = (load_file(d / "adapter_model.safetensors") for d in dirs)
    assert set(a1) == set(a2) and len(a1) == 4  # q.A, q.B, v.A, v.B of one layer
    assert any(not torch.equal(a1[k], a2[k]) for k in a1)  # epoch 2 trained on


def test_load_epoch_checkpoint(warm) -> None:
    dirs = warm[0]
    model, tok, runtime, state = load_epoch_checkpoint(dirs[0], MODEL, LORA)
    saved = load_file(dirs[0] / "adapter_model.safetensors")
    got = trainable_state(model)
    assert list(got) == [n for n, p in model.named_parameters() if p.requires_grad]
    # peft's file names drop the adapter name: ...lora_A.weight is parameter ...lora_A.default.weight
    assert {n.replace(".default.", ".") for n in got} == set(saved)
    for name, t in saved.items():
        assert torch.equal(got[name.replace(".weight", ".default.weight")], t), name
        if "lora_B" in name:
            assert float(t.abs().max()) > 0  # trained away from peft's B = 0
    # the checkpoint is a peft adapter folder: PeftModel.from_pretrained gives the same adapter
    from peft import PeftModel

    base, _ = load_model({**MODEL, "lora": {"enabled": False}})
    peft_model = PeftModel.from_pretrained(base, dirs[0])
    loaded = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert set(loaded) == set(got)
    for name, t in got.items():
        assert torch.equal(loaded[name], t), name
    params = lora_parameters(model)
    keys = [k for g in state["param_groups"] for k in g["params"]]
    assert len(keys) == len(params) == 4
    for key, p in zip(keys, params, strict=True):
        entry = state["state"][key]
        assert tuple(entry["exp_avg"].shape) == tuple(entry["exp_avg_sq"].shape) == p.shape
        assert float(entry["exp_avg_sq"].min()) >= 0 and float(entry["exp_avg_sq"].max()) > 0
        assert float(entry["step"]) == SPE
    assert tok.pad_token_id is not None and runtime.device.type == "cpu"


def test_checkpoint_without_optimizer_state_stops(warm, tmp_path) -> None:
    ckpt = tmp_path / "epoch-1"
    shutil.copytree(warm[0][0], ckpt)
    (ckpt / "optimizer.safetensors").unlink()
    with pytest.raises(SkillmixInputError, match="optimizer state"):
        load_epoch_checkpoint(ckpt, MODEL, LORA)
    ckpt2 = tmp_path / "epoch-1b"
    shutil.copytree(warm[0][0], ckpt2)
    (ckpt2 / "optimizer.json").unlink()
    with pytest.raises(SkillmixInputError, match="optimizer state"):
        load_epoch_checkpoint(ckpt2, MODEL, LORA)


def test_warmup_resume_equals_uninterrupted(warm, tmp_path) -> None:
    dirs = [tmp_path / "epoch-1", tmp_path / "epoch-2"]
    resume = tmp_path / "resume"
    first, _, _, _ = run_warmup(dirs, resume_dir=resume, stop_after=SPE)
    assert not first.completed and len(first.steps) == SPE
    assert dirs[0].is_dir() and not dirs[1].exists() and resume.is_dir()
    second, weights, mean_lrs, _ = run_warmup(dirs, resume_dir=resume)
    assert second.completed and second.resumed_from == SPE
    ref_dirs, ref_result, ref_weights, ref_lrs, _ = warm
    for d, ref in zip(dirs, ref_dirs, strict=True):
        for name in ("adapter_model.safetensors", "optimizer.safetensors"):
            got, want = load_file(d / name), load_file(ref / name)
            assert set(got) == set(want)
            for k in want:
                assert torch.equal(got[k], want[k]), (d.name, name, k)
    assert second.steps["loss"].tolist() == ref_result.steps["loss"].tolist()
    assert weights == ref_weights and mean_lrs == ref_lrs


# --- gradient features --------------------------------------------------------------------------


def hand_features(g: torch.Tensor, d: int, seed: int) -> torch.Tensor:
    proj = RademacherProjector(g.shape[1], d, seed=seed).project(g.to(torch.float32))
    return unit(proj)


def test_adam_feature_equals_hand_computation(warm) -> None:
    model, tok, runtime, state = load_epoch_checkpoint(warm[0][0], MODEL, LORA)
    data, groups = encoded_pool(tok, n=5)
    res = gradient_features(
        model,
        runtime,
        tok.pad_token_id,
        data,
        groups,
        [256],
        feature="adam",
        optimizer_state=state,
        projection_seed=7,
        batch_size=2,
    )
    assert res.kept_ids == data.ids and res.kept_skills == groups and res.excluded_ids == []
    assert list(res.features) == [256] and res.features[256].shape == (5, 256)
    # by hand: one-example gradients, the optimizer's moments in parameter order, LESS's formula
    g, ids, excluded = example_gradients(model, data, runtime, tok.pad_token_id, batch_size=1)
    assert ids == data.ids and excluded == [] and g.shape[1] == 512
    params = lora_parameters(model)
    keys = [k for grp in state["param_groups"] for k in grp["params"]]
    m = torch.cat([state["state"][k]["exp_avg"].reshape(-1) for k in keys]).to(torch.float64)
    v = torch.cat([state["state"][k]["exp_avg_sq"].reshape(-1) for k in keys]).to(torch.float64)
    beta1, beta2 = state["param_groups"][0]["betas"]
    eps = state["param_groups"][0]["eps"]
    assert (beta1, beta2, eps) == (0.9, 0.999, 1e-8)
    m2, v2, b1, b2, e2 = optimizer_moments(state, params)
    assert torch.equal(m2, m.float()) and torch.equal(v2, v.float()) and (b1, b2, e2) == (beta1, beta2, eps)
    g64 = g.to(torch.float64)
    m_new = beta1 * m + (1 - beta1) * g64
    v_new = beta2 * v + (1 - beta2) * g64**2
    gamma = m_new / torch.sqrt(v_new + eps)
    want = hand_features(gamma, 256, seed=7)
    torch.testing.assert_close(res.features[256].to(torch.float64), want, atol=1e-5, rtol=0)
    assert res.stats["beta1"] == 0.9 and res.stats["eps"] == 1e-8
    share = float((v_new > 1e-9).double().mean())
    assert res.stats["share_v_above_1e-9"] == pytest.approx(share, abs=1e-6)
    # the torch-Adam eps placement is a different, selectable feature
    other = gradient_features(
        model,
        runtime,
        tok.pad_token_id,
        data,
        groups,
        [256],
        feature="adam",
        optimizer_state=state,
        adam_variant="adam",
        projection_seed=7,
    )
    want_adam = hand_features(m_new / (torch.sqrt(v_new) + eps), 256, seed=7)
    torch.testing.assert_close(other.features[256].to(torch.float64), want_adam, atol=1e-5, rtol=0)
    assert not torch.allclose(other.features[256], res.features[256], atol=1e-3)
    # sgd: the plain gradient; sign: its sign
    for feature, x in (("sgd", g64), ("sign", torch.sign(g64))):
        got = gradient_features(
            model, runtime, tok.pad_token_id, data, groups, [256], feature=feature, projection_seed=7
        )
        torch.testing.assert_close(
            got.features[256].to(torch.float64), hand_features(x, 256, seed=7), atol=1e-5, rtol=0
        )
    # several kinds from one gradient pass equal one call per kind, projected and exact
    for dims in ([256], [256, 100_000]):
        both = gradient_feature_sets(
            model, runtime, tok.pad_token_id, data, groups, dims, ["adam", "sgd"],
            optimizer_state=state, projection_seed=7, batch_size=2,
        )  # fmt: skip
        for kind in ("adam", "sgd"):
            one = gradient_features(
                model, runtime, tok.pad_token_id, data, groups, dims, feature=kind,
                optimizer_state=state, projection_seed=7,
            )  # fmt: skip
            assert both[kind].kept_ids == one.kept_ids and set(both[kind].features) == set(one.features)
            for d in one.features:
                torch.testing.assert_close(both[kind].features[d], one.features[d], atol=1e-6, rtol=1e-5)
    # faithful mode: the feature rounded to float16 before the projection (less.md §9.4)
    half = gradient_features(
        model,
        runtime,
        tok.pad_token_id,
        data,
        groups,
        [256],
        feature="adam",
        optimizer_state=state,
        projection_seed=7,
        projection_input="float16",
    )
    want_half = hand_features(gamma.to(torch.float32).to(torch.float16), 256, seed=7)
    torch.testing.assert_close(half.features[256].to(torch.float64), want_half, atol=1e-5, rtol=0)
    assert half.stats["projection_input"] == "float16"
    rounding = (half.features[256].double() - res.features[256].double()).abs().max()
    residual = (half.features[256].double() - want_half).abs().max()
    assert residual < rounding / 10  # the rounding shows, and it is the one computed by hand
    with pytest.raises(SkillmixInputError, match="projection_input"):
        gradient_features(model, runtime, tok.pad_token_id, data, groups, [128], projection_input="bf16")
    with pytest.raises(SkillmixInputError, match="optimizer state"):
        gradient_features(model, runtime, tok.pad_token_id, data, groups, [128], feature="adam")


def test_widths_at_least_the_gradient_are_exact_unless_projection_is_forced(warm) -> None:
    model, tok, runtime, state = load_epoch_checkpoint(warm[0][0], MODEL, LORA)
    data, groups = encoded_pool(tok, n=5)
    g, _, _ = example_gradients(model, data, runtime, tok.pad_token_id, batch_size=1)
    assert g.shape[1] == 512
    kw = dict(projection_seed=7, batch_size=2)
    mixed = gradient_features(model, runtime, tok.pad_token_id, data, groups, [128, 512, 1024], **kw)
    # 512 and 1024 >= the 512 LoRA coordinates: the plain gradient itself, unit rows, cosines exact
    for d in (512, 1024):
        assert mixed.features[d].shape == (5, 512)
        torch.testing.assert_close(mixed.features[d].double(), unit(g.double()), atol=1e-6, rtol=0)
    assert mixed.stats["exact_dims"] == [512, 1024] and mixed.stats["projector"]["output_dim"] == 128
    # the narrower width is still the projection, as without exact widths
    torch.testing.assert_close(mixed.features[128].double(), hand_features(g, 128, seed=7), atol=1e-5, rtol=0)
    projected = gradient_features(
        model, runtime, tok.pad_token_id, data, groups, [128, 1024], exact=False, **kw
    )
    assert projected.features[1024].shape == (5, 1024) and projected.stats["exact_dims"] == []
    torch.testing.assert_close(
        projected.features[1024].double(), hand_features(g, 1024, seed=7), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(projected.features[128], mixed.features[128], atol=1e-6, rtol=0)
    # the Adam transform runs once per row on the exact path too
    adam = dict(feature="adam", optimizer_state=state, **kw)
    both = gradient_features(model, runtime, tok.pad_token_id, data, groups, [256, 1024], **adam)
    alone = gradient_features(model, runtime, tok.pad_token_id, data, groups, [256], **adam)
    torch.testing.assert_close(both.features[256], alone.features[256], atol=1e-6, rtol=0)
    assert both.stats["share_v_above_1e-9"] == alone.stats["share_v_above_1e-9"]
    cos = both.features[1024] @ both.features[1024].T
    approx = both.features[256] @ both.features[256].T
    assert not torch.allclose(cos, approx, atol=1e-3)  # the projection's error is visible, exact is not


def test_features_do_not_depend_on_batch_size_and_widths_are_prefixes(warm) -> None:
    model, tok, runtime, state = load_epoch_checkpoint(warm[0][1], MODEL, LORA)
    data, groups = encoded_pool(tok, n=6, start=5)
    kw = dict(feature="adam", optimizer_state=state, projection_seed=0)
    one = gradient_features(model, runtime, tok.pad_token_id, data, groups, [128, 384], batch_size=1, **kw)
    four = gradient_features(model, runtime, tok.pad_token_id, data, groups, [384, 128], batch_size=4, **kw)
    assert sorted(one.features) == sorted(four.features) == [128, 384]
    for d in (128, 384):
        torch.testing.assert_close(one.features[d], four.features[d], atol=1e-5, rtol=0)
        norms = one.features[d].norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-6, rtol=0)
    wide = one.features[384]
    torch.testing.assert_close(one.features[128].to(torch.float64), unit(wide[:, :128]), atol=1e-6, rtol=0)
    alone = gradient_features(model, runtime, tok.pad_token_id, data, groups, [128], batch_size=4, **kw)
    torch.testing.assert_close(alone.features[128], one.features[128], atol=1e-6, rtol=0)
    assert not torch.allclose(one.features[128], unit(wide[:, 128:256]).float(), atol=1e-2)


# --- sharded datastore --------------------------------------------------------------------------


def test_parse_scatteritem_and_shard_range() -> None:
    assert parse_scatteritem("1-of-1") == (1, 1)
    assert parse_scatteritem("3-of-8") == (3, 8)
    for bad in ("0-of-3", "4-of-3", "1-of-0", "1of3", "a-of-b", "-1-of-3", "1-of-3 ", ""):
        with pytest.raises(SkillmixInputError):
            parse_scatteritem(bad)
    for n, count in ((10, 3), (10, 4), (2, 3), (0, 2), (7, 7), (5, 1)):
        ranges = [shard_range(n, i, count) for i in range(1, count + 1)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # contiguous
        sizes = [b - a for a, b in ranges]
        assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
        covered = [r for a, b in ranges for r in range(a, b)]
        assert covered == list(range(n))  # every row exactly once, in order
    assert [shard_range(2, i, 3) for i in (1, 2, 3)] == [(0, 0), (0, 1), (1, 2)]  # an empty shard
    assert [shard_range(10, i, 3) for i in (1, 2, 3)] == [(0, 3), (3, 6), (6, 10)]
    for index, count in ((0, 3), (4, 3), (1, 0)):
        with pytest.raises(SkillmixInputError):
            shard_range(10, index, count)


def build_all(tmp_path, ckpt, examples, feature, count, tag, grads_cfg=None):
    """build_shard for every shard of `count`; returns (per-width arrays, index frames, results)."""
    arrays, indexes, results = {128: [], 256: []}, [], []
    for i in range(1, count + 1):
        stem = tmp_path / f"{tag}-{i}-of-{count}"
        paths = {128: f"{stem}.d128.npy", 256: f"{stem}.d256.npy"}
        res = build_shard(
            feature,
            ckpt,
            examples,
            f"{i}-of-{count}",
            paths,
            f"{stem}.index.parquet",
            f"{stem}.info.json",
            model_cfg=MODEL,
            lora_cfg=LORA,
            grads_cfg=grads_cfg or {"batch_size": 16, "projection_seed": 0},
        )
        results.append(res)
        for d in (128, 256):
            arrays[d].append(read_shard(paths[d], mmap=False))
        indexes.append(pd.read_parquet(f"{stem}.index.parquet"))
    return {d: np.concatenate(a) for d, a in arrays.items()}, indexes, results


@pytest.mark.parametrize(
    ("feature", "n", "counts"),
    [("adam", 10, (3, 4)), ("sgd", 2, (3,))],
    ids=["candidates-10-rows", "target-2-rows-empty-shard"],
)
def test_sharded_equals_unsharded(warm, tmp_path, feature, n, counts) -> None:
    pool = lego_pool().iloc[:n].reset_index(drop=True)
    examples = tmp_path / "examples.parquet"
    pool.to_parquet(examples)
    ckpt = warm[0][0]
    full, full_index, full_res = build_all(tmp_path, ckpt, examples, feature, 1, "full")
    assert full[128].dtype == np.float16 and full[128].shape == (n, 128) and full[256].shape == (n, 256)
    assert np.isfinite(full[256]).all()
    np.testing.assert_allclose(np.linalg.norm(full[256].astype(np.float64), axis=1), 1.0, atol=2e-3)
    assert full_index[0]["id"].tolist() == pool["id"].tolist()
    assert full_index[0]["skill"].tolist() == pool["skill"].tolist()
    assert full_index[0]["row"].tolist() == list(range(n))
    info = json.loads((tmp_path / "full-1-of-1.info.json").read_text())
    assert info["row_range"] == [0, n] and info["excluded_ids"] == [] and info["rows"] == n
    assert info["feature"] == feature
    scales, k = feature_scales(ckpt, pool, feature)
    for count in counts:
        parts, indexes, _ = build_all(tmp_path, ckpt, examples, feature, count, f"s{count}")
        ids = [i for frame in indexes for i in frame["id"]]
        assert ids == full_index[0]["id"].tolist()
        assert [len(f) for f in indexes] == [
            b - a for a, b in (shard_range(n, i, count) for i in range(1, 1 + count))
        ]
        for d in (128, 256):
            assert parts[d].dtype == np.float16 and parts[d].shape == full[d].shape
            # a shard batches other examples together, so its float32 sums run in another order
            gap = np.abs(parts[d].astype(np.float64) - full[d].astype(np.float64))
            bound = float16_sharding_bound(full[d], scales[d], k)
            beyond = int((gap > bound).sum())
            assert beyond == 0, f"{beyond} entries beyond the float32/float16 bound at {(count, d)}"


U32 = 2.0**-24  # unit roundoff of float32 (round to nearest)


def feature_scales(ckpt, pool: pd.DataFrame, feature: str) -> tuple[dict[int, np.ndarray], int]:
    """Per row and width d, S = Σ_i |g_i P_ij| / ‖g P[:, :d]‖₂ = ‖g‖₁ / ‖g P[:, :d]‖₂ (P is ±1): the
    sum of the absolute terms of a stored (unit-normalised) entry's dot product, in units of the
    entry. g is the exact gradient feature (a width above the gradient's dimension stores it); also
    returns the gradient's dimension."""
    model, tok, runtime, state = load_epoch_checkpoint(ckpt, MODEL, LORA)
    data = encode_frame(tok, pool, "pool", MODEL["max_length"])
    res = gradient_features(
        model, runtime, tok.pad_token_id, data, pool["skill"].tolist(), [4096], feature, state
    )
    g = res.features[4096].to(torch.float64)
    proj = RademacherProjector(g.shape[1], 256, seed=0)
    y = torch.cat([proj.block(i).to(torch.float64) for i in (0, 1)], dim=1)
    y = g @ y
    return {d: (g.abs().sum(1) / y[:, :d].norm(dim=1)).numpy() for d in (128, 256)}, g.shape[1]


def float16_sharding_bound(full: np.ndarray, scale: np.ndarray, k: int) -> np.ndarray:
    """How far two float16 features of one example may lie apart when their float32 arithmetic
    ran in different orders (sharded or not), derived from the arithmetic, not measured on a CPU.

    Each run's entry is a dot product of length k (the gradient's dimension) against a ±1
    column, divided by the row's norm (d more terms). Its terms g_i carry the gradient's own
    float32 error, relative, from reductions no longer than the model's longest (its sequence,
    max_length, or intermediate size). So a run's float32 error is at most γ_K·S with K = k + d +
    that length, γ_K = K·u/(1 − K·u) (Higham, Accuracy and Stability, §3.1) and S the row's
    `feature_scales`; two runs differ by twice that, and rounding each to float16 adds at most half
    a float16 ulp each."""
    d = full.shape[1]
    model_reduction = max(MODEL["max_length"], MODEL["tiny"]["intermediate_size"])
    big_k = k + d + model_reduction
    gamma = big_k * U32 / (1 - big_k * U32)
    # the ulp at the larger of the two magnitudes: the float32 values lie within 2γS of `full`
    magnitude = (np.abs(full.astype(np.float64)) + 2 * gamma * scale[:, None]) * (1 + 2.0**-10)
    ulp16 = np.spacing(magnitude.astype(np.float16)).astype(np.float64)
    return 2 * gamma * scale[:, None] + ulp16


# --- bad input ----------------------------------------------------------------------------------


def test_example_without_answer_tokens_is_excluded(warm) -> None:
    model, tok, runtime, state = load_epoch_checkpoint(warm[0][0], MODEL, LORA)
    data, groups = encoded_pool(tok, n=4)
    data.labels[1] = [IGNORE] * len(data.labels[1])  # the answer truncated away
    # a label only at position 0 is never predicted (labels shift by one): no answer tokens either
    data.labels[3] = [data.input_ids[3][0]] + [IGNORE] * (len(data.labels[3]) - 1)
    res = gradient_features(
        model, runtime, tok.pad_token_id, data, groups, [128], feature="adam", optimizer_state=state
    )
    assert res.excluded_ids == [data.ids[1], data.ids[3]]
    assert res.kept_ids == [data.ids[0], data.ids[2]] and res.kept_skills == [groups[0], groups[2]]
    assert res.features[128].shape == (2, 128) and torch.isfinite(res.features[128]).all()
    assert res.stats["excluded"] == 2 and res.stats["examples"] == 4
    # the kept rows are the features of those examples alone
    keep = EncodedSet(
        "pool",
        [data.ids[0], data.ids[2]],
        [data.input_ids[0], data.input_ids[2]],
        [data.labels[0], data.labels[2]],
    )
    alone = gradient_features(
        model, runtime, tok.pad_token_id, keep, [groups[0], groups[2]], [128], "adam", state
    )
    torch.testing.assert_close(res.features[128], alone.features[128], atol=1e-6, rtol=0)
    # max_length 1 leaves no room for any answer token: everything excluded, no NaN rows
    short = encode_frame(tok, lego_pool().iloc[:3], "pool", 1)
    res = gradient_features(model, runtime, tok.pad_token_id, short, groups[:3], [128], "sgd")
    assert res.excluded_ids == short.ids and res.kept_ids == [] and res.features[128].shape == (0, 128)


def test_nan_lora_weight_stops_with_the_example_id(warm) -> None:
    model, tok, runtime, _ = load_epoch_checkpoint(warm[0][0], MODEL, LORA)
    data, groups = encoded_pool(tok, n=1, start=4)
    name = lora_parameters(model)[0].name
    with torch.no_grad():
        dict(model.named_parameters())[name][0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=data.ids[0]):
        gradient_features(model, runtime, tok.pad_token_id, data, groups, [128], feature="sgd")


def test_empty_target_sets_stop(tmp_path) -> None:
    with pytest.raises(SkillmixInputError, match="empty"):
        targets_from_slices([], [], [])
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("input,target\n")
    with pytest.raises(SkillmixInputError, match="empty.csv: the target file has no rows"):
        targets_from_files([{"path": str(empty_csv)}])
    empty_jsonl = tmp_path / "empty.jsonl"
    empty_jsonl.write_text("")
    with pytest.raises(SkillmixInputError, match="empty.jsonl: the target file has no rows"):
        targets_from_files([{"path": str(empty_jsonl)}])
    # an empty file among non-empty ones is an error too, not a silently missing skill
    full = tmp_path / "full.jsonl"
    full.write_text('{"input": "a", "target": "b"}\n')
    with pytest.raises(SkillmixInputError, match="empty.jsonl: the target file has no rows"):
        targets_from_files([{"path": str(full)}, {"path": str(empty_jsonl)}])
    with pytest.raises(SkillmixInputError, match="no file matches"):
        targets_from_files([{"path": str(tmp_path / "none" / "*.json")}])
    with pytest.raises(SkillmixInputError, match="empty"):
        targets_from_files([])


# --- scores and selection -----------------------------------------------------------------------

CKPTS = ["epoch-1", "epoch-2"]
W = {"epoch-1": 0.7, "epoch-2": 0.3}
SUB = ["y", "x", "y", "y", "x"]  # target rows' skills: two skills, unequal, interleaved


def synthetic_store(tmp_path, pool_ids, cand_ids, nan_row=None, d=16):
    gen = torch.Generator().manual_seed(0)
    cand = {c: torch.randn(len(cand_ids), d, generator=gen) for c in CKPTS}
    targ = {c: torch.randn(len(SUB), d, generator=gen) for c in CKPTS}
    if nan_row is not None:
        cand[CKPTS[1]][nan_row] = float("nan")
    cuts = {CKPTS[0]: [0, 2, len(cand_ids)], CKPTS[1]: [0, 4, len(cand_ids)]}
    cs, ci, ts, ti = {}, {}, {}, {}
    for c in CKPTS:
        cs[c], ci[c] = [], []
        for s, (a, b) in enumerate(zip(cuts[c][:-1], cuts[c][1:], strict=True)):
            write_shard(cand[c][a:b], tmp_path / f"{c}-c{s}.npy")
            pd.DataFrame({"row": range(b - a), "id": cand_ids[a:b], "skill": ["g"] * (b - a)}).to_parquet(
                tmp_path / f"{c}-c{s}.parquet"
            )
            cs[c].append(tmp_path / f"{c}-c{s}.npy")
            ci[c].append(tmp_path / f"{c}-c{s}.parquet")
        for s, (a, b) in enumerate(((0, 3), (3, len(SUB)))):
            write_shard(targ[c][a:b], tmp_path / f"{c}-t{s}.npy")
            pd.DataFrame(
                {"row": range(b - a), "id": [f"t{i}" for i in range(a, b)], "skill": SUB[a:b]}
            ).to_parquet(tmp_path / f"{c}-t{s}.parquet")
        ts[c] = [tmp_path / f"{c}-t0.npy", tmp_path / f"{c}-t1.npy"]
        ti[c] = [tmp_path / f"{c}-t0.parquet", tmp_path / f"{c}-t1.parquet"]
    return cs, ci, ts, ti, cand, targ


def test_score_datastore_equals_dense(tmp_path) -> None:
    pool = pd.DataFrame({"id": [f"p{i}" for i in range(8)], "skill": ["a", "b"] * 4})
    pool["prompt"], pool["answer"], pool["text"] = "q", "a", "q a"
    cand_ids = ["p5", "p0", "p7", "p2", "p1", "p6", "p3"]  # p4 has no features; not pool order
    cs, ci, ts, ti, cand, targ = synthetic_store(tmp_path, pool["id"].tolist(), cand_ids)
    scores = score_datastore(pool, cs, ci, ts, ti, W)
    assert scores.columns.tolist() == ["id", "skill", "score", "status", "score_y", "score_x"]
    assert scores["id"].tolist() == pool["id"].tolist() and scores["skill"].tolist() == pool["skill"].tolist()
    # dense: per checkpoint the cosines of stored rows, mean within skill, weighted sum, max
    per = np.zeros((len(cand_ids), 2))
    for c in CKPTS:
        cstore = np.concatenate([read_shard(p) for p in cs[c]]).astype(np.float64)
        tstore = np.concatenate([read_shard(p) for p in ts[c]]).astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(cstore, axis=1), 1.0, atol=2e-3)
        cos = cstore @ tstore.T
        exact = (unit(cand[c]) @ unit(targ[c]).T).numpy()
        np.testing.assert_allclose(cos, exact, atol=5e-3)  # float16 storage only
        for j, s in enumerate(["y", "x"]):
            per[:, j] += W[c] * cos[:, [k for k, t in enumerate(SUB) if t == s]].mean(axis=1)
    by_id = scores.set_index("id")
    for r, i in enumerate(cand_ids):
        assert by_id.loc[i, "score_y"] == pytest.approx(per[r, 0], abs=1e-5)
        assert by_id.loc[i, "score_x"] == pytest.approx(per[r, 1], abs=1e-5)
        assert by_id.loc[i, "score"] == pytest.approx(per[r].max(), abs=1e-5)
        assert by_id.loc[i, "status"] == STATUS_SCORED
    assert by_id.loc["p4", "score"] == -np.inf and by_id.loc["p4", "status"] == STATUS_NO_ANSWER
    assert by_id.loc["p4", "score_x"] == -np.inf
    picked = select_examples(pool, scores, len(pool))
    assert "p4" not in picked["id"].tolist() and len(picked) == len(cand_ids)
    expected = sorted(cand_ids, key=lambda i: (-float(by_id.loc[i, "score"]), i))
    assert picked["id"].tolist() == expected
    assert picked["rank"].tolist() == list(range(1, 8))
    assert (np.diff(picked["score"].to_numpy()) <= 0).all()
    # per target example: its own weighted cosine with every candidate, one column each
    each = score_datastore(pool, cs, ci, ts, ti, W, per_example=True)
    target_ids = pd.concat([pd.read_parquet(p) for p in ti[CKPTS[0]]])["id"].tolist()
    cols = [f"example_{i}" for i in target_ids]
    assert each.columns.tolist() == [*scores.columns, *cols]
    pd.testing.assert_frame_equal(each[scores.columns], scores)
    dense = sum(
        W[c]
        * np.concatenate([read_shard(p) for p in cs[c]]).astype(np.float64)
        @ np.concatenate([read_shard(p) for p in ts[c]]).astype(np.float64).T
        for c in CKPTS
    )
    got = each.set_index("id").loc[cand_ids, cols].to_numpy()
    np.testing.assert_allclose(got, dense, atol=1e-5)
    assert (each.set_index("id").loc["p4", cols] == -np.inf).all()
    # balance "example": the nearest candidate of each target example in turn
    top = select_examples(pool, each, len(target_ids), balance="example")
    assert len(top) == top["id"].nunique() == len(target_ids)
    best = np.unravel_index(np.argmax(dense), dense.shape)
    assert top["id"].iloc[0] == cand_ids[best[0]]  # the best-matched example's nearest comes first
    # the target example matched second best takes its nearest candidate that is not taken yet
    order = np.argsort(-dense.max(axis=0))
    second = [cand_ids[r] for r in np.argsort(-dense[:, order[1]]) if cand_ids[r] != top["id"].iloc[0]][0]
    assert top["id"].iloc[1] == second
    with pytest.raises(SkillmixInputError, match="example_<example>"):
        select_examples(pool, scores, 3, balance="example")


def test_score_datastore_non_finite_feature_and_bad_targets(tmp_path) -> None:
    pool = pd.DataFrame({"id": [f"p{i}" for i in range(6)], "skill": "a"})
    cand_ids = [f"p{i}" for i in range(6)]
    cs, ci, ts, ti, _, _ = synthetic_store(tmp_path, cand_ids, cand_ids, nan_row=4)
    scores = score_datastore(pool, cs, ci, ts, ti, W, chunk_rows=2)
    assert scores.loc[4, "status"] == STATUS_NON_FINITE and scores.loc[4, "score"] == -np.inf
    assert not scores["score"].isna().any()
    assert (scores.drop(index=4)["status"] == STATUS_SCORED).all()
    picked = select_examples(pool, scores, 6)
    assert len(picked) == 5 and "p4" not in picked["id"].tolist()
    # a target set whose every example was excluded: nothing to score against
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"row": pd.Series([], dtype=int), "id": pd.Series([], dtype=str), "skill": []}).to_parquet(
        empty
    )
    with pytest.raises(SkillmixInputError, match="target set has no examples"):
        score_datastore(pool, cs, ci, ts, {c: [empty] for c in CKPTS}, W)
    with pytest.raises(SkillmixInputError, match="not in the pool"):
        score_datastore(pool.iloc[:3], cs, ci, ts, ti, W)


def test_select_examples_descending_ties_by_id() -> None:
    pool = pd.DataFrame({"id": ["d", "b", "a", "c", "e", "f"], "skill": ["s1", "s2", "s1", "s2", "s1", "s1"]})
    scores = pd.DataFrame({"id": pool["id"], "score": [0.5, 0.9, 0.5, 0.5, -np.inf, 0.7]})
    top = select_examples(pool, scores, 4)
    assert top["id"].tolist() == ["b", "f", "a", "c"]
    assert top["score"].tolist() == [0.9, 0.7, 0.5, 0.5] and top["rank"].tolist() == [1, 2, 3, 4]
    assert select_examples(pool, scores, 6)["id"].tolist() == ["b", "f", "a", "c", "d"]  # -inf never
    with pytest.raises(SkillmixInputError, match="stale"):
        select_examples(pool, scores.iloc[::-1].reset_index(drop=True), 2)


def test_answer_balanced_selection_takes_each_target_answer_in_turn() -> None:
    # the faithful top 4 collapses onto answer "0"; balancing over the target's answers does not
    pool = pd.DataFrame(
        {
            "id": [f"e{i}" for i in range(8)],
            "skill": ["s"] * 8,
            "answer": ["0", "0", "0", "0", "1", "1", "2", "1"],
        }
    )
    scores = pd.DataFrame({"id": pool["id"], "score": [0.9, 0.8, 0.7, 0.6, 0.5, -np.inf, 0.95, 0.4]})
    target = pd.DataFrame({"skill": ["s"] * 3, "answer": ["1", "0", "0"]})
    assert select_examples(pool, scores, 4)["answer"].tolist() == ["2", "0", "0", "0"]
    top = select_examples(pool, scores, 4, balance="answer", target=target)
    # turns: answer "0" first (best score 0.9), then "1"; answer "2" is not a target answer
    assert top["id"].tolist() == ["e0", "e4", "e1", "e7"] and top["rank"].tolist() == [1, 2, 3, 4]
    assert top["score"].tolist() == [0.9, 0.5, 0.8, 0.4]
    # once answer "1" runs out (its -inf row is never taken), "0" goes on, then the rest by score
    full = select_examples(pool, scores, 7, balance="answer", target=target)
    assert full["id"].tolist() == ["e0", "e4", "e1", "e7", "e2", "e3", "e6"]
    with pytest.raises(SkillmixInputError, match="answer column"):
        select_examples(pool, scores, 4, balance="answer")
    with pytest.raises(SkillmixInputError, match="balance must be one of"):
        select_examples(pool, scores, 4, balance="label")


def test_skill_balanced_selection_ranks_each_target_skill_by_its_own_score() -> None:
    pool = pd.DataFrame({"id": ["a", "b", "c", "d", "e"], "skill": ["x", "x", "x", "y", "y"]})
    per_a = [0.9, 0.8, 0.7, 0.1, 0.0]
    per_b = [0.85, 0.2, 0.1, 0.3, 0.25]  # b's best is also a's best
    scores = pd.DataFrame(
        {"id": pool["id"], "score": np.maximum(per_a, per_b), "score_A": per_a, "score_B": per_b}
    )
    assert select_examples(pool, scores, 3)["id"].tolist() == ["a", "b", "c"]
    top = select_examples(pool, scores, 3, balance="skill")
    assert top["id"].tolist() == ["a", "d", "b"]  # A takes a, B's next best is d, then A's b
    with pytest.raises(SkillmixInputError, match="score columns score_<skill>"):
        select_examples(pool, scores[["id", "score"]], 3, balance="skill")
    # ties within a group by id; a group never takes a row twice
    ids = ["b", "a", "c"]
    groups = {"g": np.array([1.0, 1.0, 0.0]), "h": np.array([1.0, 1.0, 1.0])}
    assert balanced_top(ids, groups, np.zeros(3), 3) == [1, 0, 2]


def test_answer_composition_counts_the_labels_of_every_selection() -> None:
    pool = pd.DataFrame({"answer": ["0"] * 6 + ["1"] * 3 + ["x", "y"]})
    less = pd.DataFrame({"answer": ["0", "0", "0", "y"]})
    table = answer_composition(pool, {"less": less}, top=2)
    assert table["answer"].tolist() == ["0", "1", "(other)"]
    assert table["pool"].tolist() == [6, 3, 2] and table["less"].tolist() == [3, 0, 1]
    assert table["less_share"].tolist() == [0.75, 0.0, 0.25]
    assert table["pool_share"].sum() == pytest.approx(1.0)


def test_random_examples() -> None:
    pool = lego_pool(3, 7)  # 21 rows
    a = random_examples(pool, 5, seed=0)
    assert len(a) == 5 and a["rank"].tolist() == [1, 2, 3, 4, 5]
    assert a.drop(columns="rank").equals(random_examples(pool, 5, seed=0).drop(columns="rank"))
    positions = [pool["id"].tolist().index(i) for i in a["id"]]
    assert positions == sorted(set(positions))  # distinct, pool order
    assert a["id"].tolist() != random_examples(pool, 5, seed=1)["id"].tolist()
    assert random_examples(pool, 21, seed=3)["id"].tolist() == pool["id"].tolist()
    for bad in (0, 22):
        with pytest.raises(SkillmixInputError):
            random_examples(pool, bad, seed=0)


def test_selection_size_and_composition() -> None:
    assert selection_size(100, 7, None) == 7
    assert selection_size(5, 7, None) == 5
    assert selection_size(100, 3, 0.5) == 3  # k wins over the fraction
    assert selection_size(100, None, 0.05) == 5
    assert selection_size(270679, None, 0.05) == 13533
    assert selection_size(10, None, 0.05) == 1
    for k, f in ((0, None), (None, 0.0), (None, 1.5), (None, None)):
        with pytest.raises(SkillmixInputError):
            selection_size(100, k, f)
    pool = lego_pool(3, 6)  # 18 rows, 6 per skill
    sel = {"less": pool.iloc[[0, 1, 2, 7]], "random": random_examples(pool, 9, seed=0)}
    comp = composition(pool, sel)
    assert comp["skill"].tolist() == ["lego-1", "lego-2", "lego-3"]
    assert comp["pool"].tolist() == [6, 6, 6] and comp["less"].tolist() == [3, 1, 0]
    assert comp["less_share"].tolist() == [0.75, 0.25, 0.0]
    for col in ("pool_share", "less_share", "random_share"):
        assert comp[col].sum() == pytest.approx(1.0, abs=1e-12)
    assert comp["random"].sum() == 9


# --- target sets --------------------------------------------------------------------------------


def shared_data() -> Path:
    return Path(os.environ.get("SKILLMIX_SHARED_DATA") or REPO.parent / "shared" / "data")


def test_targets_from_bbh_files() -> None:
    bbh = shared_data() / "bbh"
    files = sorted(bbh.glob("*.json"))
    if not files:
        pytest.skip(f"no BBH task files under {bbh} (set SKILLMIX_SHARED_DATA to the shared data folder)")
    target, evaluation = targets_from_files([{"path": str(bbh / "*.json")}], per_skill=3)
    names = [p.name.split(".")[0] for p in files]
    assert len(files) == 27
    assert list(dict.fromkeys(target["skill"])) == names
    assert target.columns.tolist() == COLUMNS
    assert len(target) == 3 * len(files) == 81
    assert (target.groupby("skill", sort=False).size() == 3).all()
    total = 0
    for path, name in zip(files, names, strict=True):
        examples = json.loads(path.read_text())["examples"]
        total += len(examples)
        t = target[target["skill"] == name]
        assert t["id"].tolist() == [f"{name}/{i}" for i in range(3)]
        assert t["prompt"].tolist() == [e["input"] for e in examples[:3]]
        assert t["answer"].tolist() == [e["target"] for e in examples[:3]]
        ev = evaluation[evaluation["skill"] == name]
        assert ev["id"].tolist() == [f"{name}/{i}" for i in range(3, len(examples))]
        assert ev["prompt"].tolist() == [e["input"] for e in examples[3:]]
    assert len(evaluation) == total - 81
    assert not set(target["id"]) & set(evaluation["id"])
    _, ev2 = targets_from_files([{"path": str(bbh / "*.json")}], per_skill=3, eval_per_skill=2)
    assert len(ev2) == 2 * len(files)
    with pytest.raises(SkillmixInputError, match="skill"):  # one name for many files
        targets_from_files([{"path": str(bbh / "*.json"), "skill": "bbh"}])


def test_targets_from_jsonl_with_custom_keys(tmp_path) -> None:
    path = tmp_path / "tasks.jsonl"
    rows = [{"question": f"q{i}?", "solution": f"s{i}", "extra": i} for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"path": str(path), "prompt_key": "question", "answer_key": "solution"}
    target, evaluation = targets_from_files([cfg], per_skill=2)
    assert target["id"].tolist() == ["tasks/0", "tasks/1"] and (target["skill"] == "tasks").all()
    assert target["prompt"].tolist() == ["q0?", "q1?"] and target["answer"].tolist() == ["s0", "s1"]
    assert evaluation["id"].tolist() == ["tasks/2", "tasks/3", "tasks/4"]
    assert evaluation["answer"].tolist() == ["s2", "s3", "s4"]
    target, _ = targets_from_files([{**cfg, "skill": "mine"}], per_skill=1)
    assert target["id"].tolist() == ["mine/0"]
    with pytest.raises(SkillmixInputError, match="'answer'"):
        targets_from_files([{**cfg, "answer_key": "answer"}])
    with pytest.raises(SkillmixInputError, match="'input'"):
        targets_from_files([{"path": str(path)}])  # default keys input / target


def test_targets_from_slices(tmp_path) -> None:
    data = generate_lego(3, 10, 1).examples
    val_paths, test_paths = [], []
    for skill, part in data.groupby("skill", sort=True):
        part = part.reset_index(drop=True)
        part.iloc[:4].to_parquet(tmp_path / f"{skill}.val.parquet")
        part.iloc[4:10].to_parquet(tmp_path / f"{skill}.test.parquet")
        val_paths.append(tmp_path / f"{skill}.val.parquet")
        test_paths.append(tmp_path / f"{skill}.test.parquet")
    target, evaluation = targets_from_slices(["lego-3", "lego-1"], val_paths, test_paths)
    assert target.columns.tolist() == evaluation.columns.tolist() == COLUMNS
    by = {s: data[data["skill"] == s].reset_index(drop=True) for s in ("lego-1", "lego-3")}
    assert target["id"].tolist() == by["lego-3"]["id"][:4].tolist() + by["lego-1"]["id"][:4].tolist()
    assert target["skill"].tolist() == ["lego-3"] * 4 + ["lego-1"] * 4
    assert (
        target["answer"].tolist() == by["lego-3"]["answer"][:4].tolist() + by["lego-1"]["answer"][:4].tolist()
    )
    assert evaluation["id"].tolist() == by["lego-3"]["id"][4:].tolist() + by["lego-1"]["id"][4:].tolist()
    t2, e2 = targets_from_slices(["lego-1"], val_paths, test_paths, per_skill=2, eval_per_skill=3)
    assert t2["id"].tolist() == by["lego-1"]["id"][:2].tolist()
    assert e2["id"].tolist() == by["lego-1"]["id"][4:7].tolist()
    with pytest.raises(SkillmixInputError, match="lego-9"):
        targets_from_slices(["lego-9"], val_paths, test_paths)


def test_lora_top_layers_through_warmup_and_datastore(tmp_path) -> None:
    model_cfg = {**MODEL, "tiny": {**MODEL["tiny"], "num_layers": 2}}
    lora = {**LORA, "dropout": 0.0, "top_layers": 1}
    dirs = [tmp_path / "epoch-1", tmp_path / "epoch-2"]
    torch.manual_seed(0)
    warmup_from_pool(model_cfg, lora, WARMUP, lego_pool(), dirs)
    adapter = load_file(dirs[-1] / "adapter_model.safetensors")
    assert adapter and all(".layers.1." in name for name in adapter)  # the top layer only
    model, tok, runtime, state = load_epoch_checkpoint(dirs[-1], model_cfg, lora)
    frozen = model.get_base_model().model._skillmix_frozen
    data, groups = encoded_pool(tok, n=6)
    kw = {"optimizer_state": state, "feature": "adam", "batch_size": 4}
    cached = gradient_features(model, runtime, tok.pad_token_id, data, groups, [100_000], **kw)
    assert frozen.misses == 6 and cached.stats["exact_dims"] == [100_000]
    frozen.remove()  # the same adapters, every layer run each pass
    full = gradient_features(model, runtime, tok.pad_token_id, data, groups, [100_000], **kw)
    torch.testing.assert_close(cached.features[100_000], full.features[100_000], atol=1e-5, rtol=1e-4)


def test_selection_jsonl_writes_chats_as_turns(tmp_path) -> None:
    from skillmix.data.chat import chat_fields
    from skillmix.selection.selected import write_jsonl

    turns = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    frame = pd.DataFrame(
        [
            {"rank": 1, "id": "a", "skill": "s", **chat_fields(turns)},
            {"rank": 2, "id": "b", "skill": "s", "prompt": "q", "answer": "x", "text": "q x", "messages": ""},
        ]
    )
    write_jsonl(frame, tmp_path / "sel.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert rows[0]["messages"] == turns and rows[0]["rank"] == 1
    assert "messages" not in rows[1] and rows[1]["answer"] == "x"


def test_a_shard_computed_by_two_processes_is_the_shard_of_one(warm, tmp_path) -> None:
    """The `grads` job on 2 processes (gloo): each computes half of the shard's rows, the first
    writes all of them; the files equal one process's (float16 rounding aside)."""
    feature = "adam"  # the one with more to gather (the share of large v' is weighted by rows)
    from skillmix.infra.processes import launch
    from skillmix.selection.datastore import shard_job

    pool = lego_pool(per_skill=5)
    pool.to_parquet(tmp_path / "pool.parquet")
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        kwargs = dict(
            feature=feature,
            checkpoint=str(warm[0][1]),
            examples=str(tmp_path / "pool.parquet"),
            scatteritem="2-of-2",
            dims=[128, 10_000],
            features=[str(out / "d128.npy"), str(out / "exact.npy")],
            index=str(out / "index.parquet"),
            info=str(out / "info.json"),
            model_cfg=MODEL,
            lora_cfg={**LORA, "dropout": 0.0},
            grads_cfg={"batch_size": 3},
        )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            launch(shard_job, kwargs, n, threads=n)
        finally:
            torch.set_num_threads(threads)
        outs[n] = out
    i1, i2 = (pd.read_parquet(outs[n] / "index.parquet") for n in (1, 2))
    assert len(i1) == 8 and i1["id"].tolist() == pool["id"].iloc[7:].tolist()  # rows 7..14 of 15
    pd.testing.assert_frame_equal(i2, i1)
    for name in ("d128.npy", "exact.npy"):
        a, b = (np.load(outs[n] / name).astype(np.float32) for n in (1, 2))
        assert a.shape == b.shape and a.shape[0] == 8
        np.testing.assert_allclose(b, a, rtol=2e-3, atol=1e-4)
    info1, info2 = (json.loads((outs[n] / "info.json").read_text()) for n in (1, 2))
    assert info1["rows"] == info2["rows"] == 8 and info1["examples"] == info2["examples"] == 8
    assert info2["share_v_above_1e-9"] == pytest.approx(info1["share_v_above_1e-9"])
