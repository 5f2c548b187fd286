"""LESS at scale (issue 30): the sparse JL projection (sjlt), the prefetching influence reader, and
the bad inputs of both (a width above the gradient's dimension, a missing or truncated shard, a
projection the settings cannot make)."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from skillmix.data.sources import COLUMNS
from skillmix.data.sources.lego import generate_lego
from skillmix.engine.encoding import EncodedSet, encode_frame
from skillmix.engine.feature_transforms import FeatureMap, Projection, Transform
from skillmix.engine.gradient_units import example_loss_gradients
from skillmix.engine.modeling import load_model, select_runtime
from skillmix.engine.projection import SparseJLProjector
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.selection import influence
from skillmix.selection.datastore import build_shard, gradient_features
from skillmix.selection.influence import influence_scores, score_datastore
from skillmix.selection.shards import RowPrefetcher, ShardedRows, write_shard
from skillmix.selection.warmup import warmup_from_pool

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
LORA = {"r": 4, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
GRAD_DIM = 2 * (4 * 32 + 32 * 4)  # q and v: A [4, 32] and B [32, 4] each -> 512


def lego(n: int) -> pd.DataFrame:
    return generate_lego(3, 8, 0).examples[COLUMNS].iloc[:n].reset_index(drop=True)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tok = load_model({**MODEL, "lora": {"enabled": True, **LORA}})
    with torch.no_grad():  # LoRA B starts at 0; give it values so every gradient is non-trivial
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    runtime = select_runtime("cpu", "fp32")
    data = encode_frame(tok, lego(10), "pool", MODEL["max_length"])
    return model, tok, runtime, data


# --- the sparse JL transform ------------------------------------------------------------------------


def test_sjlt_hash_is_the_documented_portable_rule() -> None:
    p = SparseJLProjector(6, 8, seed=0, nonzeros=2)
    cols, vals = p.tables()
    # pinned: a change of the rule (or of NumPy's PCG64 stream) changes every stored feature
    assert cols.tolist() == [[2, 0, 1, 2, 1, 2], [4, 5, 4, 4, 5, 4]]
    assert (vals * math.sqrt(2)).round().int().tolist() == [[-1, -1, 1, 1, -1, -1], [1, 1, -1, -1, -1, 1]]
    # and the rule itself: word j of PCG64(SeedSequence([seed, d, s, t])) -> (w >> 32) mod (d/s), parity
    for t in range(2):
        w = np.random.PCG64(np.random.SeedSequence([0, 8, 2, t])).random_raw(6)
        assert cols[t].tolist() == ((w >> np.uint64(32)) % np.uint64(4) + 4 * t).tolist()
        assert (vals[t] > 0).tolist() == (w % np.uint64(2) == 0).tolist()
    np.testing.assert_allclose(vals.abs().numpy(), 1 / math.sqrt(2))


def test_sjlt_index_add_equals_the_explicit_sparse_product() -> None:
    p = SparseJLProjector(6, 8, seed=0, nonzeros=2)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.5, -1.0, 0.0, 2.0, -3.0, 1.0]])
    # by hand from the pinned hash above (r = 1/sqrt 2): block 0 (columns 0..3) gets
    # col 0: -x1, col 1: +x2 - x4, col 2: -x0 + x3 - x5; block 1 (columns 4..7): col 4: x0 + x2 - x3 + x5,
    # col 5: x1 - x4
    r = 1 / math.sqrt(2)
    x0, x1, x2, x3, x4, x5 = x.T
    want = (
        torch.stack([-x1, x2 - x4, -x0 + x3 - x5, 0 * x0, x0 - x2 - x3 + x5, x1 - x4, 0 * x0, 0 * x0], dim=1)
        * r
    )
    torch.testing.assert_close(p.project(x), want, rtol=0, atol=1e-6)
    cols, vals = p.tables()
    sparse = torch.sparse_coo_tensor(
        torch.stack([torch.arange(6).repeat(2), cols.reshape(-1)]),
        vals.reshape(-1),
        (6, 8),
        check_invariants=True,
    )
    torch.testing.assert_close(p.project(x), torch.sparse.mm(sparse.t(), x.t()).t(), rtol=0, atol=1e-6)
    torch.testing.assert_close(p.project(x), x @ p.matrix(), rtol=0, atol=1e-6)
    # a coordinate range projects with its rows of S
    torch.testing.assert_close(
        p.project(x[:, 2:5], row_offset=2), x[:, 2:5] @ p.matrix()[2:5], rtol=0, atol=1e-6
    )


def test_sjlt_is_deterministic_across_instances_batches_and_row_counts() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 3000, generator=gen)
    a, b = SparseJLProjector(3000, 256, seed=5, nonzeros=4), SparseJLProjector(3000, 256, seed=5, nonzeros=4)
    whole = a.project(x)
    assert torch.equal(whole, b.project(x))
    for cuts in ([0, 1, 9], [0, 4, 5, 9]):  # one-row and multi-row batches
        parts = [a.project(x[i:j]) for i, j in zip(cuts, cuts[1:], strict=False)]
        assert torch.equal(torch.cat(parts), whole)
    assert not torch.equal(SparseJLProjector(3000, 256, seed=6, nonzeros=4).project(x), whole)


@pytest.mark.parametrize("nonzeros", [1, 4])
def test_sjlt_preserves_the_squared_norm_in_expectation(nonzeros) -> None:
    """E‖xS‖² = ‖x‖² and Var = 2(‖x‖⁴ − Σx⁴)/d for every s (a pair of coordinates collides in a
    block with probability s/d, and the s blocks are independent); the mean over K independent
    seeds is within 4 standard errors of 1, the sample variance within the chi-square-like spread."""
    d, k, dim = 256, 300, 2000
    x = torch.randn(1, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = (x / x.norm()).to(torch.float32)
    var = 2 * (1 - float((x.double() ** 4).sum())) / d
    ratios = np.array(
        [
            float(SparseJLProjector(dim, d, seed=s, nonzeros=nonzeros).project(x).double().norm() ** 2)
            for s in range(k)
        ]
    )
    assert abs(ratios.mean() - 1) < 4 * math.sqrt(var / k), (ratios.mean(), math.sqrt(var / k))
    assert 0.6 * var < ratios.var(ddof=1) < 1.5 * var, (ratios.var(ddof=1), var)


def test_projection_of_several_widths_gives_each_its_own_sketch() -> None:
    x = torch.randn(3, 700, generator=torch.Generator().manual_seed(2))
    both = Projection(700, 256, seed=1, kind="sjlt", widths=[128, 256], nonzeros=2)
    alone = Projection(700, 256, seed=1, kind="sjlt", nonzeros=2)
    out = both(x, 0)
    assert both.dim == 384 and out.shape == (3, 384)
    assert torch.equal(out[:, both.columns(256)], alone(x, 0))  # asking for 128 too changes nothing
    assert torch.equal(out[:, both.columns(128)], SparseJLProjector(700, 128, 1, 2).project(x))
    assert both.identity["kind"] == "sjlt" and both.identity["widths"] == [128, 256]
    dense = Projection(700, 256, seed=1, widths=[128])
    assert dense.dim == 256 and dense.columns(128) == slice(0, 128)
    assert dense.identity["kind"] == "rademacher-portable"


def test_sjlt_features_sharded_equal_unsharded(tiny) -> None:
    model, tok, runtime, data = tiny
    skills = ["lego"] * len(data)

    def feats(rows, batch):
        rows = list(rows)
        sub = EncodedSet(
            data.skill,
            [data.ids[i] for i in rows],
            [data.input_ids[i] for i in rows],
            [data.labels[i] for i in rows],
        )
        return gradient_features(
            model, runtime, tok.pad_token_id, sub, [skills[i] for i in rows], [128, 256], "sgd",
            batch_size=batch, projection_kind="sjlt", projection_nonzeros=2, exact=False,
        )  # fmt: skip

    full = feats(range(10), 1)
    parts = [feats(range(0, 3), 1), feats(range(3, 7), 1), feats(range(7, 10), 1)]
    for d in (128, 256):
        assert full.features[d].shape == (10, d)
        assert torch.equal(torch.cat([p.features[d] for p in parts]), full.features[d])
    assert full.stats["projector"]["kind"] == "sjlt"
    # batches of other sizes: the gradients themselves round differently (batched LM head), no more
    batched = feats(range(10), 4)
    torch.testing.assert_close(batched.features[256], full.features[256], rtol=0, atol=1e-5)
    # the sketch of a FeatureMap over the parameter slices equals the sketch of the whole gradient
    layout, batches = example_loss_gradients(
        model, runtime, tok.pad_token_id, data, list(range(4)), "lora", 4
    )
    ((_, grads),) = list(batches)
    proj = Projection(GRAD_DIM, 256, seed=0, kind="sjlt", nonzeros=2)
    sliced = FeatureMap(layout, [Transform("sgd")], proj)(grads)[0]
    flat = torch.cat([grads[p.name].reshape(4, -1) for p in layout], dim=1)
    torch.testing.assert_close(
        sliced, SparseJLProjector(GRAD_DIM, 256, 0, 2).project(flat), rtol=0, atol=1e-5
    )


def test_dense_stays_the_default_and_sjlt_comes_from_the_settings(tiny) -> None:
    cfg = complete("select.grads", {})
    assert cfg["projection_kind"] == "dense" and cfg["projection_nonzeros"] == 1
    assert complete("select.grads", {"projection_kind": "sjlt"})["projection_kind"] == "sjlt"
    model, tok, runtime, data = tiny
    res = gradient_features(
        model, runtime, tok.pad_token_id, data, ["x"] * len(data), [128], "sgd", exact=False
    )
    assert res.stats["projector"]["kind"] == "rademacher-portable"


# --- bad input: the projection -----------------------------------------------------------------------


def test_width_above_the_gradient_dimension_is_an_input_error(tiny) -> None:
    model, tok, runtime, data = tiny
    with pytest.raises(
        SkillmixInputError, match=rf"width 1024 is larger than the gradient's dimension {GRAD_DIM}"
    ):
        gradient_features(
            model, runtime, tok.pad_token_id, data, ["x"] * len(data), [128, 1024], "sgd",
            exact=False, projection_kind="sjlt",
        )  # fmt: skip
    # with exact (the default) such a width stores the unprojected feature instead
    res = gradient_features(
        model, runtime, tok.pad_token_id, data, ["x"] * len(data), [1024], "sgd", projection_kind="sjlt"
    )
    assert res.features[1024].shape == (len(data), GRAD_DIM) and res.stats["exact_dims"] == [1024]
    # the dense projection, forced, projects to any width as the original LESS does
    res = gradient_features(
        model, runtime, tok.pad_token_id, data, ["x"] * len(data), [1024], "sgd", exact=False
    )
    assert res.features[1024].shape == (len(data), 1024)


def test_a_projection_the_settings_cannot_make_is_an_input_error(tiny) -> None:
    model, tok, runtime, data = tiny
    with pytest.raises(SkillmixInputError, match="projection_kind must be one of .* got 'kronecker'"):
        gradient_features(
            model, runtime, tok.pad_token_id, data, ["x"] * 10, [128], "sgd", projection_kind="kronecker"
        )
    with pytest.raises(
        SkillmixInputError, match="projection_nonzeros 3: sjlt widths must be multiples of it"
    ):
        gradient_features(
            model,
            runtime,
            tok.pad_token_id,
            data,
            ["x"] * 10,
            [128],
            "sgd",
            projection_kind="sjlt",
            projection_nonzeros=3,
        )
    with pytest.raises(SkillmixInputError, match="projection kind must be one of"):
        Projection(512, 128, kind="gaussian")
    with pytest.raises(SkillmixInputError, match="multiple of nonzeros 3"):
        SparseJLProjector(512, 128, nonzeros=3)
    with pytest.raises(SkillmixInputError, match="outside 0..512"):
        SparseJLProjector(512, 128).project(torch.zeros(2, 10), row_offset=505)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    torch.manual_seed(0)
    cfg = {"fraction": 1.0, "seed": 0, "batch_size": 4, "lr": 1e-2, "warmup_ratio": 0.0}
    warmup_from_pool(MODEL, LORA, cfg, lego(8), [root / "epoch-1"])
    return root / "epoch-1"


def test_a_failing_shard_job_writes_nothing(checkpoint, tmp_path) -> None:
    examples = tmp_path / "examples.parquet"
    lego(6).to_parquet(examples)
    paths = {128: tmp_path / "f.d128.npy", 1024: tmp_path / "f.d1024.npy"}
    bad = ({"exact": False, "projection_kind": "sjlt"}, {"projection_kind": "sjlt", "projection_nonzeros": 3})
    for grads in bad:
        with pytest.raises(SkillmixInputError):
            build_shard(
                "sgd", checkpoint, examples, "1-of-1", paths, tmp_path / "i.parquet", tmp_path / "i.json",
                model_cfg=MODEL, lora_cfg=LORA, grads_cfg=grads,
            )  # fmt: skip
        assert sorted(os.listdir(tmp_path)) == ["examples.parquet"]
    res = build_shard(
        "sgd", checkpoint, examples, "1-of-1", {128: paths[128]}, tmp_path / "i.parquet", tmp_path / "i.json",
        model_cfg=MODEL, lora_cfg=LORA, grads_cfg={"projection_kind": "sjlt", "projection_nonzeros": 2},
    )  # fmt: skip
    assert res.stats["projector"]["nonzeros"] == 2 and paths[128].exists()


# --- bad input and overlap: reading the datastore -------------------------------------------------


def store(tmp_path, n=50, d=16, cuts=(0, 20, 50)):
    gen = torch.Generator().manual_seed(3)
    cand = torch.randn(n, d, generator=gen)
    paths = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        paths.append(tmp_path / f"c{i}.npy")
        write_shard(cand[a:b], paths[-1])
    targets = torch.randn(4, d, generator=gen)
    return {"e1": paths}, {"e1": (targets / targets.norm(dim=1, keepdim=True)).numpy()}, ["a", "a", "b", "b"]


def test_missing_or_truncated_shard_is_an_input_error_naming_it(tmp_path) -> None:
    shards, targets, skills = store(tmp_path)
    good, _ = influence_scores(shards, targets, skills, {"e1": 1.0})
    missing = {"e1": [shards["e1"][0], tmp_path / "gone.npy"]}
    with pytest.raises(SkillmixInputError, match="gone.npy: cannot read feature shard header"):
        influence_scores(missing, targets, skills, {"e1": 1.0})
    path = shards["e1"][1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(SkillmixInputError, match=rf"{path.name}: feature shard is truncated"):
        influence_scores(shards, targets, skills, {"e1": 1.0})
    # truncated after its header was checked (e.g. still being written): the reader thread says so
    path.write_bytes(data)
    rows = ShardedRows(shards["e1"])
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(SkillmixInputError, match=rf"{path.name}: feature shard ended early"):
        with RowPrefetcher(rows.reads(0, rows.n, 7), 7) as reader:
            list(reader)
    path.write_bytes(data)
    np.testing.assert_array_equal(influence_scores(shards, targets, skills, {"e1": 1.0})[0], good)
    # a missing shard index: the pool table is not made
    pool = pd.DataFrame({"id": [f"x{i}" for i in range(50)], "skill": "s"})
    with pytest.raises(SkillmixInputError, match="nope.parquet"):
        score_datastore(pool, shards, {"e1": [tmp_path / "nope.parquet"]}, {}, {}, {"e1": 1.0})


@pytest.mark.parametrize("read_rows", [1, 7, 4096])
def test_prefetching_reader_gives_every_row_once_in_order(tmp_path, monkeypatch, read_rows) -> None:
    shards, targets, skills = store(tmp_path, cuts=(0, 1, 20, 21, 50))
    rows = ShardedRows(shards["e1"])
    want = np.concatenate([np.load(p) for p in shards["e1"]])
    with RowPrefetcher(rows.reads(3, 48, read_rows), read_rows, depth=2) as reader:
        got = [(r.out, x.copy()) for r, x in reader]
    assert [o for o, _ in got] == sorted(o for o, _ in got)
    np.testing.assert_array_equal(np.concatenate([x for _, x in got]), want[3:48])
    # scores do not depend on the read size, the prefetch depth or the pass size
    monkeypatch.setattr(influence, "READ_ROWS", read_rows)
    base = influence_scores(shards, targets, skills, {"e1": 1.0}, chunk_rows=65536)[1]
    for depth, chunk in ((1, 5), (3, 13)):
        monkeypatch.setattr(influence, "PREFETCH", depth)
        per = influence_scores(shards, targets, skills, {"e1": 1.0}, chunk_rows=chunk)[1]
        np.testing.assert_allclose(per, base, rtol=1e-6, atol=1e-7)
    dense = want.astype(np.float64) @ targets["e1"].T.astype(np.float64)
    np.testing.assert_allclose(base, np.stack([dense[:, :2].mean(1), dense[:, 2:].mean(1)], 1), atol=1e-5)


def test_leaving_the_reader_early_stops_its_thread(tmp_path) -> None:
    shards, _, _ = store(tmp_path)
    rows = ShardedRows(shards["e1"])
    reader = RowPrefetcher(rows.reads(0, rows.n, 1), 1, depth=2)
    with reader:
        next(iter(reader))
    assert not reader._thread.is_alive()
