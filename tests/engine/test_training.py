"""Encoding, samplers over skills, the training loop, resumption and evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from skillmix.engine.encoding import IGNORE, collate, encode_frame, encode_row, per_example_loss
from skillmix.engine.evaluation import evaluate_skills
from skillmix.engine.modeling import build_tiny_model, select_runtime
from skillmix.engine.tokenizers import byte_tokenizer
from skillmix.engine.training import TrainSettings, train
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.baselines import RandomSampler, StratifiedSampler
from skillmix.mixing.strategies import make_sampler

TINY = {
    "architecture": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_layers": 2,
    "num_heads": 4,
    "max_positions": 64,
}
CPU = select_runtime("cpu", "fp32")


def frame(skill: str, n: int, seed: int, offset: int) -> pd.DataFrame:
    """A learnable toy skill: the answer is (first digit + offset) mod 10."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b = (int(x) for x in rng.integers(0, 10, 2))
        prompt = f"Input: {a} {b} {skill}. Output:"
        answer = str((a + offset) % 10)
        rows.append(
            {
                "id": f"{skill}-{i}",
                "skill": skill,
                "prompt": prompt,
                "answer": answer,
                "text": f"{prompt} {answer}",
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def toy():
    tok = byte_tokenizer()
    skills = {"copy": 0, "shift": 3}
    tr = [encode_frame(tok, frame(s, 200, i, o), s, 48) for i, (s, o) in enumerate(skills.items())]
    va = [encode_frame(tok, frame(s, 40, 10 + i, o), s, 48) for i, (s, o) in enumerate(skills.items())]
    return tok, list(skills), tr, va


# --- encoding -------------------------------------------------------------------------------


def test_answer_tokens_are_the_only_labels() -> None:
    tok = byte_tokenizer()
    ids, labels, prompt, cut = encode_row(tok, "Input: 1 + 2 Output:", "3", "Input: 1 + 2 Output: 3", 64)
    assert not cut
    assert ids == prompt + tok(" 3", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert labels == [IGNORE] * len(prompt) + ids[len(prompt) :]
    assert tok.decode([t for t in labels if t != IGNORE], skip_special_tokens=True) == " 3"


def test_plain_text_labels_every_token() -> None:
    tok = byte_tokenizer()
    ids, labels, prompt, _ = encode_row(tok, "", "", "some text", 64)
    assert prompt == [] and labels == ids and len(ids) == len("some text") + 1


def test_long_prompt_is_cut_from_the_left() -> None:
    tok = byte_tokenizer()
    ids, labels, prompt, cut = encode_row(tok, "x" * 100 + "END", "42", "", 20)
    assert cut and len(ids) == 20
    assert tok.decode(prompt).endswith("END")
    assert tok.decode([t for t in labels if t != IGNORE], skip_special_tokens=True) == " 42"


def test_collate_pads_and_ignores_pads() -> None:
    batch = collate([[5, 6, 7], [8]], [[IGNORE, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_per_example_loss_is_the_mean_over_label_tokens() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[IGNORE, 1, 2, IGNORE], [IGNORE, IGNORE, IGNORE, 5]])
    got = per_example_loss(logits, labels)
    lp = torch.log_softmax(logits, -1)
    want0 = -(lp[0, 0, 1] + lp[0, 1, 2]) / 2
    want1 = -lp[1, 2, 5]
    torch.testing.assert_close(got, torch.stack([want0, want1]))


# --- samplers -------------------------------------------------------------------------------


def test_random_follows_sizes_and_stratified_is_uniform() -> None:
    sizes = [100, 300, 600]
    skills = ["a", "b", "c"]
    np.testing.assert_allclose(RandomSampler(skills, sizes, 0).mixture(), [0.1, 0.3, 0.6])
    np.testing.assert_allclose(StratifiedSampler(skills, sizes, 0).mixture(), [1 / 3] * 3)
    counts = np.zeros(3)
    s = StratifiedSampler(skills, sizes, 0)
    for step in range(1, 301):
        for k, _ in s.sample(step, 20):
            counts[k] += 1
    assert np.all(np.abs(counts / counts.sum() - 1 / 3) < 0.02)


def test_examples_are_drawn_without_replacement_per_pass() -> None:
    s = StratifiedSampler(["a", "b"], [7, 5], seed=1)
    seen: dict[int, list[int]] = {0: [], 1: []}
    for step in range(1, 40):
        for k, i in s.sample(step, 4):
            seen[k].append(i)
    for k, n in [(0, 7), (1, 5)]:
        draws = seen[k]
        full = len(draws) // n
        assert full >= 2
        for p in range(full):
            assert sorted(draws[p * n : (p + 1) * n]) == list(range(n))


def test_sampler_is_deterministic_and_resumable() -> None:
    a = RandomSampler(["a", "b"], [10, 30], seed=5)
    first = [a.sample(t, 8) for t in range(1, 6)]
    state = a.state_dict()
    rest = [a.sample(t, 8) for t in range(6, 12)]
    b = RandomSampler(["a", "b"], [10, 30], seed=5)
    assert [b.sample(t, 8) for t in range(1, 6)] == first
    c = RandomSampler(["a", "b"], [10, 30], seed=5)
    c.load_state_dict(state)
    assert [c.sample(t, 8) for t in range(6, 12)] == rest
    d = RandomSampler(["a", "b"], [10, 30], seed=6)
    assert [d.sample(t, 8) for t in range(1, 6)] != first


def test_unknown_strategy_and_empty_skill() -> None:
    with pytest.raises(SkillmixInputError, match="unknown strategy 'greedy'"):
        make_sampler("greedy", ["a"], [3], 0)
    with pytest.raises(SkillmixInputError, match="b"):
        make_sampler("random", ["a", "b"], [3, 0], 0)


# --- training -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(toy):
    tok, skills, tr, va = toy
    model, _ = build_tiny_model(TINY, seed=0)
    settings = TrainSettings(steps=300, batch_size=32, lr=1e-3, warmup_steps=20, eval_every=150)
    result = train(
        model, tok, tr, make_sampler("stratified", skills, [200, 200], 0), settings, CPU, val_sets=va
    )
    return model, result


def test_loss_falls_and_accuracy_rises(trained) -> None:
    _, result = trained
    curve = result.val_curve
    first, last = curve[curve.step == 0], curve[curve.step == 300]
    assert list(curve.step.unique()) == [0, 150, 300]
    assert (last.loss.values < 0.5 * first.loss.values).all()
    assert last.accuracy.mean() > first.accuracy.mean() + 0.3
    assert result.steps.loss.iloc[-10:].mean() < 0.5 * result.steps.loss.iloc[:10].mean()
    counts = result.skill_counts.groupby("step")["count"].sum()
    assert (counts == 32).all() and len(counts) == 300


def test_exact_match_equals_teacher_forced_greedy(toy, trained) -> None:
    """Greedy generation reproduces the answer iff every answer token is the argmax."""
    tok, _, _, va = toy
    model, _ = trained
    table = evaluate_skills(model, tok, va, CPU, batch_size=16)
    assert list(table.columns) == ["skill", "loss", "accuracy", "exact", "n"]
    for data, row in zip(va, table.itertuples(), strict=True):
        batch = collate(data.input_ids, data.labels, tok.pad_token_id)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        hit = ((logits[:, :-1].argmax(-1) == labels) | (labels == IGNORE)).all(1)
        assert row.exact == pytest.approx(hit.float().mean().item())
        assert row.loss == pytest.approx(per_example_loss(logits, batch["labels"]).mean().item(), rel=1e-5)
        assert row.n == len(data)
    assert 0 < table.accuracy.mean()
    wrong = encode_frame(tok, frame("copy", 40, 10, 5), "copy", 48)  # answers the model never learned
    assert evaluate_skills(model, tok, [wrong], CPU, 16).accuracy.iloc[0] < table.accuracy.iloc[0]


def test_interrupted_and_resumed_equals_uninterrupted(toy, tmp_path) -> None:
    tok, skills, tr, va = toy
    settings = TrainSettings(steps=24, batch_size=8, lr=3e-3, warmup_steps=4, eval_every=8, resume_every=5)

    def fresh():
        model, _ = build_tiny_model(TINY, seed=0)
        return model, make_sampler("random", skills, [len(s) for s in tr], 0)

    model, sampler = fresh()
    full = train(model, tok, tr, sampler, settings, CPU, val_sets=va)
    want = {k: v.clone() for k, v in model.state_dict().items()}

    ckpt = tmp_path / "ckpt"
    model, sampler = fresh()
    stopped = train(
        model,
        tok,
        tr,
        sampler,
        settings,
        CPU,
        val_sets=va,
        resume_dir=ckpt,
        fingerprint_="run-a",
        stop_after=13,
    )
    assert not stopped.completed
    assert [p.name for p in ckpt.iterdir()] == ["step-00000010"]

    model, sampler = fresh()  # a new process would start from scratch like this
    resumed = train(
        model, tok, tr, sampler, settings, CPU, val_sets=va, resume_dir=ckpt, fingerprint_="run-a"
    )
    assert resumed.completed and resumed.resumed_from == 10
    got = model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    pd.testing.assert_frame_equal(resumed.steps, full.steps)
    pd.testing.assert_frame_equal(resumed.val_curve, full.val_curve)
    pd.testing.assert_frame_equal(resumed.skill_counts, full.skill_counts)
    assert not ckpt.exists()  # removed after a completed run


def test_checkpoint_of_another_run_is_not_resumed(toy, tmp_path) -> None:
    tok, skills, tr, va = toy
    settings = TrainSettings(steps=6, batch_size=4, eval_every=6, resume_every=2)
    model, _ = build_tiny_model(TINY, seed=0)
    train(
        model,
        tok,
        tr,
        make_sampler("random", skills, [200, 200], 0),
        settings,
        CPU,
        resume_dir=tmp_path / "c",
        fingerprint_="old",
        stop_after=4,
    )
    model, _ = build_tiny_model(TINY, seed=0)
    result = train(
        model,
        tok,
        tr,
        make_sampler("random", skills, [200, 200], 0),
        settings,
        CPU,
        resume_dir=tmp_path / "c",
        fingerprint_="new",
    )
    assert result.resumed_from is None and len(result.steps) == 6


def test_lr_schedule_and_weight_decay_groups(toy) -> None:
    tok, skills, tr, _ = toy
    model, _ = build_tiny_model(TINY, seed=0)
    settings = TrainSettings(steps=20, batch_size=4, lr=1e-3, warmup_steps=5, schedule="linear")
    result = train(model, tok, tr, make_sampler("random", skills, [200, 200], 0), settings, CPU)
    lrs = result.steps.lr.to_numpy()
    np.testing.assert_allclose(lrs[:6], [0, 2e-4, 4e-4, 6e-4, 8e-4, 1e-3], atol=1e-12)
    np.testing.assert_allclose(lrs[-1], 1e-3 * 1 / 15, rtol=1e-9)
    assert result.steps.grad_norm.notna().all()


def test_generation_batches_stay_within_the_longest_example() -> None:
    from skillmix.engine.evaluation import generation_batches

    prompts, answers = [60, 2, 30, 5, 58], [4, 40, 10, 3, 6]
    batches = generation_batches(prompts, answers, batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(5))
    limit = max(p + a for p, a in zip(prompts, answers, strict=True))
    for b in batches:
        assert len(b) <= 2
        assert max(prompts[i] for i in b) + max(answers[i] for i in b) <= limit


def test_long_prompt_and_long_answer_in_one_batch_do_not_overflow_positions() -> None:
    """gpt2 has absolute positions: a batch wider than max_positions would crash generation."""
    tok = byte_tokenizer()
    tiny = {**TINY, "architecture": "gpt2", "max_positions": 64}
    model, _ = build_tiny_model(tiny, seed=0)
    rows = pd.DataFrame(
        [
            {"id": "a", "skill": "s", "prompt": "p" * 200, "answer": "y", "text": ""},
            {"id": "b", "skill": "s", "prompt": "short", "answer": "z" * 40, "text": ""},
        ]
    )
    data = encode_frame(tok, rows, "s", 64)
    assert max(len(x) for x in data.input_ids) <= 64
    table = evaluate_skills(model, tok, [data], CPU, batch_size=2)
    assert table.n.iloc[0] == 2 and np.isfinite(table.loss.iloc[0])
