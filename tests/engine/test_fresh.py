"""Fresh-per-round synthetic data (`train.data: fresh`): generation, sampler indices, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from skillmix.data.sources import generate_fresh, load_source, source_vocabulary
from skillmix.data.sources.lego import resolve_lego
from skillmix.data.sources.xor import xor_answer, xor_bit_maps
from skillmix.engine.encoding import encode_frame
from skillmix.engine.fresh import FreshSets
from skillmix.engine.modeling import build_tiny_model, select_runtime
from skillmix.engine.sampling import round_counts
from skillmix.engine.tokenizers import byte_tokenizer, word_tokenizer
from skillmix.engine.training import TrainSettings, train
from skillmix.engine.training_run import fresh_training_sets
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.strategies import make_sampler

LEGO = {"kind": "lego", "seed": 3, "lego": {"n_vars": 4, "examples_per_skill": 50}}
XOR = {"kind": "xor", "seed": 1, "xor": {"n_symbols": 16, "examples_per_skill": 40}}
ADDITION = {"kind": "addition", "seed": 2, "addition": {"n_digits": 2, "examples_per_skill": 30}}
CPU = select_runtime("cpu", "fp32")
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "max_positions": 16}


def test_fresh_examples_are_deterministic_by_stream_and_new_per_stream() -> None:
    counts = {"lego-1": 30, "lego-3": 200}
    a = generate_fresh(LEGO, counts, (9, 0)).examples
    assert a.equals(generate_fresh(LEGO, counts, (9, 0)).examples)
    assert a.groupby("skill").size().to_dict() == counts  # exactly the counts, no other skill
    other_round = generate_fresh(LEGO, counts, (9, 1)).examples
    other_seed = generate_fresh(LEGO, counts, (8, 0)).examples
    pool = load_source(LEGO).examples
    for b in (other_round, other_seed, pool):
        assert len(set(a["text"]) & set(b["text"])) < 0.05 * len(a)


@pytest.mark.parametrize("source", [LEGO, ADDITION])
def test_fresh_lego_and_addition_are_distinct_within_a_skill(source) -> None:
    skills = load_source(source).skills
    frame = generate_fresh(source, dict.fromkeys(skills, 300), (4, 2)).examples
    assert frame.groupby("skill")["text"].nunique().to_dict() == dict.fromkeys(skills, 300)


def test_fresh_answers_are_right_and_keep_the_sources_maps() -> None:
    lego = generate_fresh(LEGO, {"lego-2": 50, "lego-4": 50}, (1, 5)).examples
    assert all(resolve_lego(p) == int(a) for p, a in zip(lego["prompt"], lego["answer"], strict=True))
    xor = generate_fresh(XOR, {"map-f": 60, "xor-g": 60}, (1, 5)).examples
    maps = xor_bit_maps(["f", "g", "h"], 16, XOR["seed"])  # the pool's maps, from source.seed
    assert all(xor_answer(p, maps) == int(a) for p, a in zip(xor["prompt"], xor["answer"], strict=True))
    words = set(source_vocabulary(XOR))
    assert all(set(t.split()) <= words for t in xor["text"])


def test_fresh_refuses_non_synthetic_sources_and_unknown_skills() -> None:
    with pytest.raises(SkillmixInputError, match="synthetic"):
        generate_fresh({"kind": "table", "table": {}}, {"a": 1}, (1,))
    with pytest.raises(SkillmixInputError, match=r"lego-9"):
        generate_fresh(LEGO, {"lego-9": 1}, (1,))
    tok = byte_tokenizer()
    with pytest.raises(SkillmixInputError, match=r"train\.data.*source\.kind is 'table'"):
        fresh_training_sets("fresh", "train.data", {"kind": "table"}, ["a"], tok, {}, 0)
    with pytest.raises(SkillmixInputError, match=r"graph\.runs\.data: expected pool or fresh"):
        fresh_training_sets("fres", "graph.runs.data", LEGO, ["lego-1"], tok, {}, 0)
    assert fresh_training_sets("pool", "train.data", {"kind": "table"}, ["a"], tok, {}, 0) is None


def test_fresh_sampler_indexes_each_rounds_own_examples_once() -> None:
    skills = ["a", "b", "c"]
    sampler = make_sampler("random", skills, [10, 30, 60], seed=4, update_steps=5)
    sampler.use_fresh()
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for step in range(1, 6):  # one round of 5 steps × 8
        for s, k in sampler.sample(step, 8):
            seen[s].append(k)
    counts = sampler.plan_counts()
    assert counts.tolist() == round_counts(np.array([0.1, 0.3, 0.6]), 40).tolist()
    assert all(sorted(seen[s]) == list(range(counts[s])) for s in range(3))  # each example once
    curriculum = make_sampler("curriculum", skills, [1, 1, 1], 0, example_losses=[[0.0], [1.0], [2.0]])
    with pytest.raises(SkillmixInputError, match="fixed pool"):
        curriculum.use_fresh()


def _fresh_run(tok, seed: int, resume_dir=None, stop_after=None, fingerprint_=""):
    source = {"kind": "xor", "seed": 0, "xor": {"n_symbols": 16, "examples_per_skill": 20}}
    skills = load_source(source).skills
    val = [encode_frame(tok, f, s, 16) for s, f in load_source(source).examples.groupby("skill", sort=False)]
    model, _ = build_tiny_model({**TINY, "tokenizer": "word", "vocabulary": source_vocabulary(source)}, 0)
    sampler = make_sampler("stratified", skills, [20] * len(skills), seed, update_steps=4)
    sampler.use_fresh()
    sets = FreshSets(source, skills, tok, 16, seed)
    settings = TrainSettings(steps=12, batch_size=8, lr=3e-3, eval_every=6, resume_every=5, seed=seed)
    result = train(
        model,
        tok,
        sets,
        sampler,
        settings,
        CPU,
        val_sets=val,
        resume_dir=resume_dir,
        fingerprint_=fingerprint_,
        stop_after=stop_after,
    )
    return model, result, sets


def test_fresh_training_is_deterministic_by_seed_and_survives_resume(tmp_path) -> None:
    tok = word_tokenizer(source_vocabulary({"kind": "xor", "xor": {"n_symbols": 16}}))
    model, full, sets = _fresh_run(tok, seed=1)
    want = {k: v.clone() for k, v in model.state_dict().items()}
    rounds = [sets.for_round(r, [8] * 5) for r in (0, 1)]
    assert rounds[0][0].input_ids != rounds[1][0].input_ids  # each round its own examples

    ckpt = tmp_path / "ckpt"
    _, stopped, _ = _fresh_run(tok, seed=1, resume_dir=ckpt, stop_after=7, fingerprint_="f")
    assert not stopped.completed  # stopped mid-round 1 (steps 5-8), checkpoint at step 5
    model, resumed, _ = _fresh_run(tok, seed=1, resume_dir=ckpt, fingerprint_="f")
    assert resumed.resumed_from == 5
    assert all(torch.equal(want[k], v) for k, v in model.state_dict().items())
    pd.testing.assert_frame_equal(resumed.steps, full.steps)

    model, other, _ = _fresh_run(tok, seed=2)
    assert not other.steps["loss"].equals(full.steps["loss"])
