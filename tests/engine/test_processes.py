"""Several processes in one job (DDP over gloo on the CPU), gradient accumulation, bf16 weights,
gradient checkpointing: the same run, however the batch is split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from skillmix.data.slicing import make_slices
from skillmix.engine.encoding import encode_frame, label_count
from skillmix.engine.modeling import build_tiny_model, load_model, select_runtime
from skillmix.engine.tokenizers import byte_tokenizer
from skillmix.engine.training import TrainSettings, batch_split, train
from skillmix.graph.writing import write_graph
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.processes import job_processes, launch
from skillmix.mixing.job import train_job
from skillmix.mixing.strategies import make_sampler
from skillmix.selection.pool import warmup_indices
from skillmix.selection.warmup import warmup_job

CPU = select_runtime("cpu", "fp32")
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2, "max_positions": 96}
MODEL = {"kind": "tiny", "seed": 0, "tiny": TINY, "max_length": 96, "device": "cpu", "precision": "fp32"}


def test_batch_split_and_job_processes() -> None:
    assert batch_split(32, 1, 1) == (32, 32)
    assert batch_split(32, 2, 4) == (16, 4)
    assert batch_split(8, 2, 1) == (4, 4)
    with pytest.raises(
        SkillmixInputError, match=r"batch_size 12 .* 2 process\(es\) x gradient_accumulation_steps 4"
    ):
        batch_split(12, 2, 4)
    with pytest.raises(SkillmixInputError, match="gradient_accumulation_steps must be >= 1"):
        batch_split(8, 1, 0)
    assert job_processes(None, 0) == 1 and job_processes(None, 1) == 1 and job_processes(None, 4) == 4
    assert job_processes(2, 0) == 2 and job_processes(3, 1) == 3
    with pytest.raises(SkillmixInputError, match="one process per GPU"):
        job_processes(2, 4)


def test_label_count_is_the_loss_denominator() -> None:
    assert label_count([-100, -100, 5, 6, 1]) == 3
    assert label_count([7, -100, 5]) == 1  # position 0 is never predicted


def toy_sets():
    tok = byte_tokenizer()
    rng = np.random.default_rng(0)
    sets = []
    for k, skill in enumerate(("copy", "shift")):
        rows = []
        for i in range(64):
            a = int(rng.integers(0, 10))
            prompt = f"In {a} {skill}. Out:"
            # answers of one or two tokens, so micro-batches hold different numbers of label tokens
            answer = str((a + 3 * k) % 10) * (1 + i % 2)
            rows.append(
                {"id": f"{skill}-{i}", "skill": skill, "prompt": prompt, "answer": answer, "text": ""}
            )
        sets.append(encode_frame(tok, pd.DataFrame(rows), skill, 48))
    return tok, sets


def test_gradient_accumulation_equals_one_pass() -> None:
    """Batch 32 in 4 passes of 8 gives the same steps as one pass of 32 (float tolerance)."""
    tok, sets = toy_sets()
    runs = []
    for accumulation in (1, 4):
        model, _ = build_tiny_model({**TINY, "architecture": "llama"}, seed=0)
        settings = TrainSettings(
            steps=6, batch_size=32, gradient_accumulation_steps=accumulation, lr=3e-3, warmup_steps=1
        )
        sampler = make_sampler("random", ["copy", "shift"], [64, 64], 0)
        result = train(model, tok, sets, sampler, settings, CPU, val_sets=sets, eval_batch_size=64)
        runs.append((model.state_dict(), result))
    (w1, r1), (w4, r4) = runs
    assert r1.steps["n_tokens"].tolist() == r4.steps["n_tokens"].tolist()
    np.testing.assert_allclose(r4.steps["loss"], r1.steps["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r4.steps["grad_norm"], r1.steps["grad_norm"], rtol=1e-4)
    pd.testing.assert_frame_equal(r4.skill_counts, r1.skill_counts)
    for name, t in w1.items():
        torch.testing.assert_close(w4[name], t, rtol=1e-4, atol=1e-5, msg=name)
    # not a run that stood still: the weights moved
    fresh, _ = build_tiny_model({**TINY, "architecture": "llama"}, seed=0)
    assert any(not torch.allclose(fresh.state_dict()[n], t) for n, t in w1.items())


def test_bf16_weights_and_gradient_checkpointing() -> None:
    """model.dtype bfloat16 loads bf16 weights that train; gradient checkpointing leaves the
    losses and gradients as they are."""
    model, _ = load_model({**MODEL, "dtype": "bfloat16"})
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    tok, sets = toy_sets()
    settings = TrainSettings(steps=2, batch_size=8, lr=1e-3, warmup_steps=0)
    result = train(model, tok, sets, make_sampler("random", ["copy", "shift"], [64, 64], 0), settings, CPU)
    assert np.isfinite(result.steps["loss"]).all()

    runs = []
    for checkpointing in (False, True):
        model, _ = load_model({**MODEL, "gradient_checkpointing": checkpointing})
        flag = getattr(model, "is_activation_checkpointing", None)
        assert (flag if flag is not None else model.is_gradient_checkpointing) == checkpointing
        settings = TrainSettings(steps=3, batch_size=8, lr=1e-3, warmup_steps=0)
        sampler = make_sampler("random", ["copy", "shift"], [64, 64], 0)
        runs.append((train(model, tok, sets, sampler, settings, CPU), model.state_dict()))
    (plain, w0), (checkpointed, w1) = runs
    np.testing.assert_allclose(checkpointed.steps["loss"], plain.steps["loss"], rtol=1e-6)
    for name, t in w0.items():
        torch.testing.assert_close(w1[name], t, rtol=1e-5, atol=1e-6, msg=name)


# --- two processes (gloo) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    root = tmp_path_factory.mktemp("sliced")
    source = {"kind": "lego", "seed": 0, "lego": {"n_vars": 3, "examples_per_skill": 48}}
    manifest = make_slices(source, {"seed": 0, "val": 8, "test": 8}, root / "slices")
    skills = [s["name"] for s in manifest["skills"]]
    slugs = [s["slug"] for s in manifest["skills"]]
    graph = root / "graph"
    matrix = np.eye(len(skills)) + 0.5 * np.tri(len(skills), k=-1)
    write_graph(graph, matrix, skills, skills, None, "given", None)
    return root, source, slugs, graph


def run_train_job(
    root: Path, source, slugs, graph, n: int, name: str, parallel: str = "ddp", stop_after=None, resume=None
) -> Path:
    out = root / name
    outputs = {
        k: str(out / f)
        for k, f in {
            "model": "model",
            "steps": "steps.parquet",
            "skill_counts": "skill_counts.parquet",
            "val_curve": "val_curve.parquet",
            "mixture": "mixture.parquet",
            "metrics": "metrics.json",
        }.items()
    }
    kwargs = dict(
        strategy="skillit",
        manifest=str(root / "slices/manifest.json"),
        train=[str(root / f"slices/train/{s}.parquet") for s in slugs],
        val=[str(root / f"slices/val/{s}.parquet") for s in slugs],
        model_cfg={**MODEL, "parallel": parallel},
        train_cfg={
            "steps": 8,
            "batch_size": 8,
            "warmup_steps": 1,
            "eval_every": 4,
            "update_steps": 2,
            "resume_every": 4,
        },
        eval_cfg={"batch_size": 32, "max_examples_per_skill": 8},
        strategy_cfg={"eta": 0.5},
        graph_dir=str(graph),
        source_cfg=source,
        resume=str(resume or out / "resume"),
        outputs=outputs,
        stop_after=stop_after,
    )
    with torch.random.fork_rng(devices=[]):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as each of the two processes
        try:
            launch(train_job, kwargs, n, threads=n)
        finally:
            torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_train_skillit_as_one(sliced, parallel) -> None:
    """A Skill-It run on 2 CPU processes (gloo; DDP, or FSDP with each process holding half of every
    weight) equals the 1-process run: the same batches and mixtures, step losses within 1e-5,
    weights within float tolerance."""
    root, source, slugs, graph = sliced
    one = run_train_job(root, source, slugs, graph, 1, "one")
    two = run_train_job(root, source, slugs, graph, 2, f"two-{parallel}", parallel)
    assert json.loads((two / "metrics.json").read_text())["processes"] == 2
    assert json.loads((one / "metrics.json").read_text())["processes"] == 1
    mix1, mix2 = (pd.read_parquet(d / "mixture.parquet") for d in (one, two))
    assert len(mix1) > len(slugs)  # the mixture was updated during the run
    # FSDP reduces gradients in another order than one process: the weights differ by float rounding
    # (below 1e-6), which the mixture's exponential update can grow to a few 1e-6
    pd.testing.assert_frame_equal(mix2, mix1, rtol=1e-5, atol=0 if parallel == "ddp" else 2e-5)
    pd.testing.assert_frame_equal(*(pd.read_parquet(d / "skill_counts.parquet") for d in (two, one)))
    s1, s2 = (pd.read_parquet(d / "steps.parquet") for d in (one, two))
    assert s1["n_tokens"].tolist() == s2["n_tokens"].tolist()
    np.testing.assert_allclose(s2["loss"], s1["loss"], rtol=0, atol=1e-5)
    c1, c2 = (pd.read_parquet(d / "val_curve.parquet") for d in (one, two))
    np.testing.assert_allclose(c2["loss"], c1["loss"], rtol=1e-5)
    w1, w2 = (load_file(d / "model/model.safetensors") for d in (one, two))
    assert set(w1) == set(w2)
    for name, t in w1.items():
        torch.testing.assert_close(w2[name], t, rtol=1e-4, atol=1e-5, msg=name)
    assert not (two / "resume").exists()


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_warmup_as_one(tmp_path, parallel) -> None:
    """The LESS warm-up on 2 processes (DDP or FSDP) writes the same steps, epoch adapters and Adam
    moments as on 1."""
    from skillmix.data.sources import COLUMNS
    from skillmix.data.sources.lego import generate_lego

    pool = generate_lego(3, 40, 0).examples[COLUMNS]
    pool.to_parquet(tmp_path / "pool.parquet")
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    warm = {"fraction": 0.4, "seed": 0, "epochs": 2, "batch_size": 8, "lr": 1e-3}
    dirs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        ckpts = [str(out / f"epoch{e}") for e in (1, 2)]
        kwargs = dict(
            pool=str(tmp_path / "pool.parquet"),
            model_cfg={**MODEL, "parallel": parallel},
            lora_cfg=lora,
            warmup_cfg=warm,
            checkpoints=ckpts,
            names=["epoch1", "epoch2"],
            resume=str(out / "resume"),
            outputs={k: str(out / f"{k}.{e}") for k, e in (("subset", "parquet"), ("steps", "parquet"))}
            | {"weights": str(out / "weights.json")},
        )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            launch(warmup_job, kwargs, n, threads=n)
        finally:
            torch.set_num_threads(threads)
        dirs[n] = out
    s1, s2 = (pd.read_parquet(dirs[n] / "steps.parquet") for n in (1, 2))
    assert len(s1) == 2 * 6  # 48 examples, batch 8, 2 epochs
    np.testing.assert_allclose(s2["loss"], s1["loss"], rtol=0, atol=1e-5)
    sub1, sub2 = (pd.read_parquet(dirs[n] / "subset.parquet") for n in (1, 2))
    assert sub1["id"].tolist() == sub2["id"].tolist() == pool["id"].iloc[warmup_indices(120, 0.4, 0)].tolist()
    w1, w2 = (json.loads((dirs[n] / "weights.json").read_text()) for n in (1, 2))
    assert w1["weights"] == pytest.approx(w2["weights"]) and w2["processes"] == 2
    for e in (1, 2):
        a1, a2 = (load_file(dirs[n] / f"epoch{e}/adapter_model.safetensors") for n in (1, 2))
        o1, o2 = (load_file(dirs[n] / f"epoch{e}/optimizer.safetensors") for n in (1, 2))
        for name, t in a1.items():
            torch.testing.assert_close(a2[name], t, rtol=1e-4, atol=1e-6, msg=name)
        for name, t in o1.items():
            torch.testing.assert_close(o2[name], t, rtol=1e-3, atol=1e-8, msg=name)
    # LESS's selection from either warm-up's checkpoints is the same: the pool's Adam features
    # against a target's gradient features, summed over the checkpoints with their weights
    selections = [selection_of(dirs[n], pool, lora, w) for n, w in ((1, w1), (2, w2))]
    assert len(selections[0]) == 12 and selections[0] == selections[1]


WIDE = 10**6  # wider than the LoRA gradient: exact features


def set_features(model, tok, runtime, frame, **kw):
    """Exact LESS features of a frame's examples (library call)."""
    from skillmix.selection.datastore import gradient_features

    data = encode_frame(tok, frame, "set", MODEL["max_length"])
    skills = frame["skill"].tolist()
    return gradient_features(model, runtime, tok.pad_token_id, data, skills, [WIDE], batch_size=8, **kw)


def selection_of(folder, pool, lora, weights) -> list[str]:
    """The top 10% of `pool` by LESS's score from the warm-up checkpoints in `folder`."""
    from skillmix.selection.warmup import load_epoch_checkpoint

    target = pool[pool["skill"] == "lego-3"].head(4)
    score = torch.zeros(len(pool))
    for name, weight in weights["weights"].items():
        model, tok, runtime, opt_state = load_epoch_checkpoint(folder / name, MODEL, lora)

        cand = set_features(model, tok, runtime, pool, feature="adam", optimizer_state=opt_state)
        targ = set_features(model, tok, runtime, target, feature="sgd")
        assert len(cand.kept_ids) == len(pool)
        score += weight * (cand.features[WIDE] @ targ.features[WIDE].T).mean(1)
    return [pool["id"].iloc[i] for i in torch.argsort(score, descending=True)[:12].tolist()]


def test_resume_states_move_between_one_process_and_fsdp_shards(sliced, tmp_path) -> None:
    """A resume state written by 2 FSDP processes (gathered from the shards) resumes on 1 process,
    and one written by 1 process resumes sharded on 2: both end as the uninterrupted run."""
    root, source, slugs, graph = sliced
    whole = run_train_job(root, source, slugs, graph, 1, "whole")
    for first, then, name in ((2, 1, "fsdp-then-one"), (1, 2, "one-then-fsdp")):
        resume = tmp_path / name / "resume"
        stopped = run_train_job(root, source, slugs, graph, first, name, "fsdp", stop_after=4, resume=resume)
        assert [p.name for p in resume.iterdir()] == ["step-00000004"]
        assert not (stopped / "steps.parquet").exists()  # an interrupted run writes no outputs
        done = run_train_job(root, source, slugs, graph, then, name, "fsdp", resume=resume)
        assert json.loads((done / "metrics.json").read_text())["resumed_from"] == 4
        s1, s2 = (pd.read_parquet(d / "steps.parquet") for d in (whole, done))
        np.testing.assert_allclose(s2["loss"], s1["loss"], rtol=0, atol=1e-5)
        pd.testing.assert_frame_equal(*(pd.read_parquet(d / "skill_counts.parquet") for d in (done, whole)))
        w1, w2 = (load_file(d / "model/model.safetensors") for d in (whole, done))
        for key, t in w1.items():
            torch.testing.assert_close(w2[key], t, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")
