"""Online data mixing (Albalak et al., 2023; docs/methods/mixers.md#odm): the worked example by hand,
the ε schedule and the policy, the warm-up, the released code's two rules replayed against their
arithmetic, multinomial allocation, resume, and a short run on the engine."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2

from skillmix.engine.encoding import encode_frame
from skillmix.engine.modeling import build_tiny_model, select_runtime
from skillmix.engine.sampling import BatchStats, MixingInputs
from skillmix.engine.tokenizers import byte_tokenizer
from skillmix.engine.training import TrainSettings, train
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.odm import ODMSampler, exploration_rate, gibbs_policy, warmup_steps
from skillmix.mixing.strategies import build_sampler, strategy_settings


def odm(k: int = 2, sizes=None, steps: int = 0, seed: int = 0, **block) -> ODMSampler:
    """An ODM sampler as a run builds it: the completed block, the run's budget in its inputs."""
    skills = [f"s{i}" for i in range(k)]
    inputs = MixingInputs(
        skills=skills,
        sizes=list(sizes or [50] * k),
        seed=seed,
        update_steps=10,
        eval_skills=skills,
        steps=steps,
    )
    return build_sampler("odm", inputs, strategy_settings("odm", block))


def stats(step: int, rewards: dict[int, float], k: int) -> BatchStats:
    """A step's statistics with mean loss `rewards[i]` for the skills present (10 tokens each)."""
    tokens = np.array([10.0 if i in rewards else 0.0 for i in range(k)])
    loss = np.array([10.0 * rewards.get(i, 0.0) for i in range(k)])
    return BatchStats(step=step, loss_sum=loss, tokens=tokens, examples=(tokens > 0).astype(float))


def reward_sequence(k: int, steps: int) -> list[dict[int, float]]:
    """Rewards that vary with the step and the skill, some skills absent from some batches."""
    return [
        {i: 2.0 + math.sin(s + 1.7 * i) for i in range(k) if (s + i) % 3 != 0 or i == 0}
        for s in range(1, steps + 1)
    ]


# --- the worked example, ε and the policy ---------------------------------------------------------


def test_worked_example_by_hand() -> None:
    """Paper form, K = 2, α = 0.9, W = 0 (docs/methods/mixers.md#odm)."""
    s = odm(2, warmup=0)
    assert exploration_rate(1, 2) == 0.5 and exploration_rate(2, 2) == pytest.approx(0.416277, abs=1e-6)
    s.sample(1, 8)
    np.testing.assert_allclose(s.mixture(), [0.5, 0.5])
    s.observe_batch(stats(1, {0: 3.0, 1: 2.0}, 2))
    np.testing.assert_allclose(s.estimates, [0.6, 0.4], rtol=1e-12)
    s.sample(2, 8)
    np.testing.assert_allclose(s.mixture(), [0.504183, 0.495817], atol=1e-6)
    soft = np.exp([0.3, 0.2]) / np.exp([0.3, 0.2]).sum()
    want = (1 - 2 * exploration_rate(2, 2)) * soft + exploration_rate(2, 2)
    np.testing.assert_allclose(s.policy(2), want, rtol=1e-12)


def test_exploration_rate_follows_the_formula() -> None:
    for k in (2, 3, 5, 7):
        rates = [exploration_rate(t, k) for t in range(0, 2000)]
        assert rates[0] == 1 / k
        assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
        for t in range(1, 2000):
            assert rates[t] == pytest.approx(min(1 / k, math.sqrt(math.log(k) / (k * t))), rel=1e-15)
            if t <= k * math.log(k):
                assert rates[t] == 1 / k
        assert rates[math.floor(k * math.log(k)) + 1] < 1 / k
    assert exploration_rate(5, 1) == 0.0


def test_the_policy_has_its_floor_and_is_uniform_while_k_eps_is_one() -> None:
    rng = np.random.default_rng(0)
    k = 4
    for _ in range(50):
        estimates = rng.normal(scale=5.0, size=k)
        t = int(rng.integers(1, 500))
        pi = gibbs_policy(estimates, exploration_rate(t, k), exploration_rate(t - 1, k))
        assert pi.sum() == pytest.approx(1.0) and (pi >= exploration_rate(t, k) - 1e-15).all()
        if t <= k * math.log(k):
            np.testing.assert_allclose(pi, 1 / k)


def test_no_update_during_the_warmup_then_uniform() -> None:
    s = odm(3, sizes=[10, 30, 60], warmup=3)
    for step in range(1, 4):
        s.sample(step, 8)
        np.testing.assert_allclose(s.mixture(), [0.1, 0.3, 0.6])
        s.observe_batch(stats(step, {0: 5.0, 1: 1.0}, 3))
        assert (s.estimates == 0).all() and s.updates == 0
    s.sample(4, 8)
    np.testing.assert_allclose(s.mixture(), [1 / 3] * 3)
    s.observe_batch(stats(4, {0: 5.0, 1: 1.0}, 3))
    assert s.estimates[0] > s.estimates[1] > 0 and s.estimates[2] == 0  # skill 2 absent: unchanged
    assert odm(3, warmup_mixture="stratified", warmup=3, sizes=[10, 30, 60]).policy(1).tolist() == [1 / 3] * 3


def test_a_skill_with_higher_reward_gains_probability() -> None:
    s = odm(3, warmup=0)
    first = []
    for step in range(1, 200):
        first.append(s.policy(step)[0])
        s.observe_batch(stats(step, {0: 3.0, 1: 1.0, 2: 1.0}, 3))
    pi = s.policy(200)
    assert first[0] == pytest.approx(1 / 3) and first[20] > 0.35 and pi[0] > 0.36
    assert pi[0] > pi[1] + 0.05 and pi[1] == pytest.approx(pi[2])


def test_importance_weighting_favours_the_rarely_drawn() -> None:
    s = odm(2, warmup=0)
    s.estimates = np.array([1.0, 40.0])
    pi = s.policy(30)
    assert pi[0] < pi[1]
    s.observe_batch(stats(30, {0: 2.0, 1: 2.0}, 2))
    gain = s.estimates - 0.9 * np.array([1.0, 40.0])
    assert gain[0] > gain[1]
    np.testing.assert_allclose(gain, 0.1 * 2.0 / pi, rtol=1e-12)


# --- the released code's rules --------------------------------------------------------------------


def replay_repository(variant: str, k: int, alpha: float, initial, rewards, warmup: int, every: int):
    """The released updaters' arithmetic, written out in plain Python: the probabilities each
    step's batch is drawn from."""
    probs, eps, est = [x / sum(initial) for x in initial], 1 / k, [0.0] * k
    used = []
    for s, step_rewards in enumerate(rewards, start=1):
        used.append(list(probs))
        if not (s > warmup and s % every == 0):
            continue
        prev, eps = eps, min(1 / k, math.sqrt(math.log(k) / (k * s)))
        for i, r in step_rewards.items():
            if variant == "code_smoothed_mean":
                est[i] = alpha * est[i] + (1 - alpha) * math.exp(r)
            else:
                est[i] += (r / 10) / probs[i]
        if variant == "code_smoothed_mean":
            scale = (1 - k * eps) / sum(e * prev for e in est)
            weights = [e * prev * scale + eps for e in est]
        else:
            scale = (1 - k * eps) / sum(math.exp(e * prev) for e in est)
            weights = [math.exp(e * prev) * scale + eps for e in est]
        probs = [w / sum(weights) for w in weights]
    return used


@pytest.mark.parametrize("variant", ["code_smoothed_mean", "code_exp3"])
@pytest.mark.parametrize(("warmup", "every"), [(0, 1), (4, 1), (3, 2)])
def test_code_variants_replay_the_repository(variant, warmup, every) -> None:
    k, sizes, rewards = 3, [20, 30, 50], reward_sequence(3, 60)
    s = odm(k, sizes=sizes, variant=variant, alpha=0.8, warmup=warmup, update_every=every)
    want = replay_repository(variant, k, 0.8, sizes, rewards, warmup, every)
    for step, step_rewards in enumerate(rewards, start=1):
        s.sample(step, 4)
        np.testing.assert_allclose(s.mixture(), want[step - 1], rtol=1e-12, atol=1e-15)
        s.observe_batch(stats(step, step_rewards, k))


def test_paper_updates_every_f_steps_after_the_warmup() -> None:
    s = odm(2, warmup=2, update_every=3)
    updated = []
    for step in range(1, 13):
        before = s.estimates.copy()
        s.observe_batch(stats(step, {0: 1.0, 1: 2.0}, 2))
        if (s.estimates != before).any():
            updated.append(step)
    assert updated == [3, 6, 9, 12] and s.updates == 4


# --- allocation, resume, bad input ----------------------------------------------------------------


def test_multinomial_slots_follow_the_policy_and_the_seed() -> None:
    s = odm(3, sizes=[10, 30, 60], warmup=500)
    counts = np.zeros(3)
    for step in range(1, 301):
        assert s.segment(step) == (step - 1, step, 1)
        for skill, _ in s.sample(step, 8):
            counts[skill] += 1
    expected = np.array([0.1, 0.3, 0.6]) * counts.sum()
    assert chi2.sf(((counts - expected) ** 2 / expected).sum(), df=2) > 1e-3
    a, b = odm(3, sizes=[10, 30, 60], warmup=500), odm(3, sizes=[10, 30, 60], warmup=500)
    other = odm(3, sizes=[10, 30, 60], warmup=500, seed=1)
    first = [a.sample(step, 8) for step in range(1, 6)]
    assert first == [b.sample(t, 8) for t in range(1, 6)]
    assert first != [other.sample(t, 8) for t in range(1, 6)]


@pytest.mark.parametrize("variant", ["paper", "code_smoothed_mean", "code_exp3"])
def test_resume_reproduces_the_run(variant) -> None:
    rewards = reward_sequence(3, 30)

    def drive(sampler, first, last):
        for step in range(first, last + 1):
            sampler.sample(step, 4)
            sampler.observe_batch(stats(step, rewards[step - 1], 3))

    full = odm(3, variant=variant, warmup=0.1, steps=30)
    drive(full, 1, 30)
    for stop in (2, 3, 11):
        part = odm(3, variant=variant, warmup=0.1, steps=30)
        drive(part, 1, stop)
        again = odm(3, variant=variant, warmup=0.1, steps=30)
        again.load_state_dict(json.loads(json.dumps(part.state_dict())))
        drive(again, stop + 1, 30)
        assert again.history == full.history and again.draws == full.draws
        np.testing.assert_array_equal(again.estimates, full.estimates)


def test_warmup_share_and_steps() -> None:
    assert warmup_steps(0.01, 300) == 3 and warmup_steps(0.29, 100) == 29 and warmup_steps(0.01, 50) == 0
    assert warmup_steps(5, 0) == 5 and warmup_steps(0, 0) == 0
    assert odm(2, steps=500).warmup == 5
    with pytest.raises(SkillmixInputError, match=r"odm\.warmup.*share of train\.steps"):
        odm(2)
    with pytest.raises(SkillmixInputError, match=r"odm\.warmup.*train\.steps = 8"):
        odm(2, warmup=8, steps=8)
    with pytest.raises(SkillmixInputError, match=r"odm\.warmup"):
        warmup_steps(2.5, 100)


def test_a_nan_reward_names_the_skill_and_the_step() -> None:
    s = odm(2, warmup=0)
    bad = BatchStats(step=4, loss_sum=np.array([1.0, np.nan]), tokens=np.array([3.0, 2.0]),
                     examples=np.array([1.0, 1.0]))  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"'s1'.*step 4"):
        s.observe_batch(bad)


def test_one_skill_is_always_drawn() -> None:
    s = odm(1, warmup=0.5)  # no share of train.steps needed: there is no bandit
    for step in range(1, 4):
        assert s.sample(step, 4) and s.mixture().tolist() == [1.0]
        s.observe_batch(stats(step, {0: 2.0}, 1))
    assert s.updates == 0


# --- on the engine --------------------------------------------------------------------------------

TINY = {"architecture": "llama", "hidden_size": 32, "intermediate_size": 64, "num_layers": 2,
        "num_heads": 2, "max_positions": 64}  # fmt: skip
CPU = select_runtime("cpu", "fp32")


def toy_frame(skill: str, n: int, seed: int, offset: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a = int(rng.integers(0, 10))
        prompt, answer = f"In {a} {skill}. Out:", str((a + offset) % 10)
        rows.append({"id": f"{skill}-{i}", "skill": skill, "prompt": prompt, "answer": answer, "text": ""})
    return pd.DataFrame(rows)


def test_odm_trains_on_the_engine_and_resumes(tmp_path) -> None:
    tok = byte_tokenizer()
    sizes = {"copy": 64, "shift": 32}
    tr = [encode_frame(tok, toy_frame(s, n, i, 3 * i), s, 48) for i, (s, n) in enumerate(sizes.items())]
    settings = TrainSettings(steps=8, batch_size=8, lr=3e-3, warmup_steps=2, resume_every=3)

    def run(**kw):
        model, _ = build_tiny_model(TINY, seed=0)
        inputs = MixingInputs(list(sizes), list(sizes.values()), 0, 100, list(sizes), steps=8)
        sampler = build_sampler("odm", inputs, strategy_settings("odm", {"warmup": 2}))
        return train(model, tok, tr, sampler, settings, CPU, **kw), sampler

    full, sampler = run()
    assert full.mixtures.drop_duplicates("round").step.tolist() == list(range(1, 9))
    weights = full.mixtures.pivot(index="step", columns="skill", values="weight")[list(sizes)].to_numpy()
    np.testing.assert_allclose(weights[:2], [[2 / 3, 1 / 3]] * 2)
    np.testing.assert_allclose(weights[2], [0.5, 0.5])
    assert sampler.updates == 6 and (sampler.estimates > 0).all()
    assert (full.skill_counts.groupby("step")["count"].sum() == 8).all()

    ckpt = tmp_path / "ckpt"
    stopped, _ = run(resume_dir=ckpt, fingerprint_="odm", stop_after=5)
    assert not stopped.completed
    resumed, _ = run(resume_dir=ckpt, fingerprint_="odm")
    assert resumed.resumed_from == 3
    pd.testing.assert_frame_equal(resumed.mixtures, full.mixtures)
    pd.testing.assert_frame_equal(resumed.steps, full.steps)
    pd.testing.assert_frame_equal(resumed.skill_counts, full.skill_counts)
