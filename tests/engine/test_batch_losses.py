"""What the training loop hands a sampler with `needs_batch_losses` (the step's BatchStats, before
the backward pass), the per-skill weighted step loss, and the reference model's losses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from batch_loss_helpers import CPU, SKILLS, TINY, RecordingSampler, direct_stats, example_losses, toy_sets

from skillmix.engine.batch_stats import token_coefficients
from skillmix.engine.encoding import collate, label_token_losses
from skillmix.engine.modeling import build_tiny_model
from skillmix.engine.sampling import BatchStats
from skillmix.engine.training import TrainSettings, train
from skillmix.infra.processes import launch
from skillmix.mixing.baselines import StratifiedSampler


@pytest.fixture(scope="module")
def toy():
    return toy_sets()


def settings(steps: int = 3, accumulation: int = 1, **kw) -> TrainSettings:
    return TrainSettings(
        steps=steps, batch_size=8, gradient_accumulation_steps=accumulation, lr=3e-3, warmup_steps=1, **kw
    )


def run(toy, sampler, accumulation: int = 1, steps: int = 3, reference=None, on_step=None):
    tok, sets = toy
    model, _ = build_tiny_model(TINY, seed=0)
    result = train(
        model, tok, sets, sampler, settings(steps, accumulation), CPU, reference=reference, on_step=on_step
    )
    return model, result


@pytest.mark.parametrize("accumulation", [1, 4])
def test_batch_stats_equal_a_direct_computation(toy, accumulation) -> None:
    """Every step's stats are those of the model before the step's update, on the whole batch."""
    tok, sets = toy
    snapshots = [build_tiny_model(TINY, seed=0)[0].state_dict()]

    def keep(step, model, optimizer, rows):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})

    sampler = RecordingSampler([64, 64])
    run(toy, sampler, accumulation, on_step=keep)
    assert [st.step for st in sampler.seen] == [1, 2, 3]
    model, _ = build_tiny_model(TINY, seed=0)
    for stats, pairs, state in zip(sampler.seen, sampler.batches, snapshots[:-1], strict=True):
        model.load_state_dict(state)
        want = direct_stats(model, sets, pairs, tok.pad_token_id)
        np.testing.assert_allclose(stats.loss_sum, want["loss_sum"], rtol=1e-5)
        assert stats.tokens.tolist() == want["tokens"].tolist()
        assert stats.examples.tolist() == want["examples"].tolist() and stats.examples.sum() == 8
        assert stats.reference_loss_sum is None
        per_example = example_losses(model, sets, pairs, tok.pad_token_id)
        assert [(s, n) for s, _, n in stats.example_losses] == [
            (s, sets[s].label_counts[i]) for s, i in pairs
        ]
        np.testing.assert_allclose([loss for _, loss, _ in stats.example_losses], per_example, rtol=1e-5)


def test_accumulated_stats_equal_the_one_pass_stats(toy) -> None:
    one, four = RecordingSampler([64, 64]), RecordingSampler([64, 64])
    run(toy, one, 1)
    run(toy, four, 4)
    for a, b in zip(one.seen, four.seen, strict=True):
        np.testing.assert_allclose(b.loss_sum, a.loss_sum, rtol=1e-5)
        assert b.tokens.tolist() == a.tokens.tolist()


@pytest.mark.parametrize("accumulation", [1, 4])
def test_observing_without_weights_trains_as_a_plain_sampler(toy, accumulation) -> None:
    """Loss weights None: the plain label-token mean, bit for bit."""
    plain_model, plain = run(toy, StratifiedSampler(SKILLS, [64, 64], seed=0), accumulation)
    model, observed = run(toy, RecordingSampler([64, 64]), accumulation)
    pd.testing.assert_frame_equal(observed.steps, plain.steps, check_exact=True)
    got = model.state_dict()
    assert all(torch.equal(t, got[k]) for k, t in plain_model.state_dict().items())


@pytest.mark.parametrize("accumulation", [1, 4])
def test_token_proportional_weights_give_the_plain_loss(toy, accumulation) -> None:
    """α_j = |T_j| / Σ|T| (DoReMi's code form with equal weights) is the plain label-token mean."""
    plain_model, plain = run(toy, StratifiedSampler(SKILLS, [64, 64], seed=0), accumulation)
    model, weighted = run(
        toy, RecordingSampler([64, 64], lambda st: st.tokens / st.tokens.sum()), accumulation
    )
    np.testing.assert_allclose(weighted.steps["loss"], plain.steps["loss"], rtol=1e-5)
    np.testing.assert_allclose(weighted.steps["grad_norm"], plain.steps["grad_norm"], rtol=1e-4)
    got = model.state_dict()
    for name, t in plain_model.state_dict().items():
        torch.testing.assert_close(got[name], t, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("alpha", [[1.0, 1.0], [0.3, 0.7]])
def test_step_loss_weighs_each_skills_mean_token_loss(toy, alpha) -> None:
    """loss = Σ_j α_j · (summed loss of skill j's label tokens / their count): mixers.md §4.2, domain."""
    tok, sets = toy
    sampler = RecordingSampler([64, 64], np.array(alpha))
    _, result = run(toy, sampler, steps=1)
    model, _ = build_tiny_model(TINY, seed=0)
    want = direct_stats(model, sets, sampler.batches[0], tok.pad_token_id)
    expected = sum(a * s / n for a, s, n in zip(alpha, want["loss_sum"], want["tokens"], strict=True))
    assert result.steps["loss"].iloc[0] == pytest.approx(expected, rel=1e-5)
    plain = want["loss_sum"].sum() / want["tokens"].sum()
    assert result.steps["loss"].iloc[0] != pytest.approx(plain, rel=1e-3)  # not the plain mean


@pytest.mark.parametrize("accumulation", [1, 4])
def test_a_zero_weight_skill_contributes_no_gradient(toy, accumulation) -> None:
    """Weights (0, 1): step 1's gradient is that of skill 1's mean token loss alone."""
    tok, sets = toy
    model, _ = build_tiny_model(TINY, seed=0)
    grads: dict[str, torch.Tensor] = {}
    hooks = [
        p.register_post_accumulate_grad_hook(lambda p, n=n: grads.__setitem__(n, p.grad.clone()))
        for n, p in model.named_parameters()
    ]
    sampler = RecordingSampler([64, 64], np.array([0.0, 1.0]))
    train(model, tok, sets, sampler, settings(1, accumulation), CPU)
    for hook in hooks:
        hook.remove()
    pairs = [(s, i) for s, i in sampler.batches[0] if s == 1]
    assert 0 < len(pairs) < 8
    fresh, _ = build_tiny_model(TINY, seed=0)
    batch = collate(
        [sets[s].input_ids[i] for s, i in pairs], [sets[s].labels[i] for s, i in pairs], tok.pad_token_id
    )
    losses, mask = label_token_losses(fresh, batch)
    (losses.sum() / mask.sum()).backward()
    for name, p in fresh.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_token_coefficients() -> None:
    stats = BatchStats(
        step=4, loss_sum=np.array([3.0, 0.0, 2.0]), tokens=np.array([6, 0, 4]), examples=np.array([2, 0, 1])
    )
    np.testing.assert_allclose(token_coefficients([0.5, 0.2, 0.3], stats), [0.5 / 6, 0.0, 0.3 / 4])
    for bad in ([1.0, 1.0], [1.0, np.nan, 1.0], [1.0, -0.1, 1.0]):
        with pytest.raises(ValueError, match="loss weights of step 4 must be 3 finite non-negative"):
            token_coefficients(bad, stats)


def test_a_sampler_that_needs_a_reference_refuses_to_train_without_one(toy) -> None:
    tok, sets = toy
    model, _ = build_tiny_model(TINY, seed=0)
    with pytest.raises(ValueError, match="'recording' sampler needs a reference model"):
        train(model, tok, sets, RecordingSampler([64, 64], reference=True), settings(1), CPU)


@pytest.mark.parametrize("accumulation", [1, 4])
def test_reference_losses_equal_a_direct_computation(toy, accumulation) -> None:
    tok, sets = toy
    reference, _ = build_tiny_model(TINY, seed=1)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    sampler = RecordingSampler([64, 64], np.array([0.5, 2.0]), reference=True)
    run(toy, sampler, accumulation, reference=reference)
    assert not reference.training
    assert all(p.grad is None for p in reference.parameters())
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in before.items())
    for stats, pairs in zip(sampler.seen, sampler.batches, strict=True):
        want = direct_stats(reference, sets, pairs, tok.pad_token_id)
        np.testing.assert_allclose(stats.reference_loss_sum, want["loss_sum"], rtol=1e-5)
    # the trained model's own losses differ from the reference's after the first update
    assert not np.allclose(sampler.seen[-1].loss_sum, sampler.seen[-1].reference_loss_sum)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_observe_and_weigh_the_whole_batch(tmp_path, monkeypatch, parallel) -> None:
    """2 CPU processes (gloo), 2 micro-batches each: the same statistics, reference losses, step
    losses and weights as 1 process in one pass."""
    from batch_loss_helpers import weighted_job

    # the launched processes import the job from this folder
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    )
    with torch.random.fork_rng(devices=[]):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            weighted_job(str(tmp_path / "one.json"), parallel, 1)
            launch(
                weighted_job, {"out": str(tmp_path / "two.json"), "parallel": parallel, "accumulation": 2}, 2
            )
        finally:
            torch.set_num_threads(threads)
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    for a, b in zip(one["stats"], two["stats"], strict=True):
        assert (a["step"], a["tokens"], a["examples"]) == (b["step"], b["tokens"], b["examples"])
        np.testing.assert_allclose(b["loss_sum"], a["loss_sum"], rtol=1e-5)
        np.testing.assert_allclose(b["reference_loss_sum"], a["reference_loss_sum"], rtol=1e-5)
        assert [e[0::2] for e in b["example_losses"]] == [e[0::2] for e in a["example_losses"]]
        np.testing.assert_allclose(
            [e[1] for e in b["example_losses"]], [e[1] for e in a["example_losses"]], rtol=1e-5
        )
    np.testing.assert_allclose(two["steps"]["loss"], one["steps"]["loss"], rtol=1e-5)
    for name, t in one["weights"].items():
        np.testing.assert_allclose(two["weights"][name], t, rtol=1e-4, atol=1e-5, err_msg=name)


def test_excess_losses_are_clipped_per_token(toy) -> None:
    """DoReMi's excess: per skill, Σ over label tokens of max(ℓ_x − ℓ^ref_x, 0), not the clipped
    difference of the sums (step 1: the trained model is still the initial one)."""
    tok, sets = toy
    reference, _ = build_tiny_model(TINY, seed=1)
    sampler = RecordingSampler([64, 64], np.array([0.5, 2.0]), reference=True)
    run(toy, sampler, steps=1, reference=reference)
    initial, _ = build_tiny_model(TINY, seed=0)
    pairs = sampler.batches[0]
    batch = collate([sets[s].input_ids[i] for s, i in pairs], [sets[s].labels[i] for s, i in pairs],
                    tok.pad_token_id)  # fmt: skip
    with torch.no_grad():
        mine, _ = label_token_losses(initial, batch)
        ref, _ = label_token_losses(reference, batch)
    per_example = (mine - ref).clamp(min=0).sum(1).double().numpy()
    want = np.bincount([s for s, _ in pairs], weights=per_example, minlength=2)
    stats = sampler.seen[0]
    np.testing.assert_allclose(stats.excess_loss_sum, want, rtol=1e-5)
    # clipping per token keeps more than clipping the per-skill difference of the sums
    assert np.all(stats.excess_loss_sum >= np.maximum(stats.loss_sum - stats.reference_loss_sum, 0) - 1e-9)
