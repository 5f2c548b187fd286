"""The samplers over skills: Skill-It's update rule against hand computations, and the baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skillmix.engine.sampling import round_counts
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.curricula import CurriculumSampler, SkillCurriculumSampler
from skillmix.mixing.skillit import SkillItSampler
from skillmix.mixing.strategies import make_sampler

SIZES = [50, 50, 50]


def skillit(graph, eval_skills, eta=0.5, **kw) -> SkillItSampler:
    k = np.asarray(graph).shape[0]
    return SkillItSampler([f"s{i}" for i in range(k)], [50] * k, 0, np.asarray(graph), eval_skills, eta, **kw)


def run_round(sampler, round_, losses, batch=4):
    """Sample every step of a round, then report the round-end evaluation."""
    u = sampler.update_steps
    for step in range(round_ * u + 1, (round_ + 1) * u + 1):
        sampler.sample(step, batch)
    assert sampler.needs_eval((round_ + 1) * u)
    sampler.observe((round_ + 1) * u, losses)


def test_initial_mixture_by_hand() -> None:
    s = skillit([[1.0, 0.5], [0.0, 1.0]], ["s0", "s1"], eta=0.5)
    # p1 ∝ exp(0.5 · A·1) = exp(0.5 · [1.5, 1.0])
    want = np.exp([0.75, 0.5]) / np.exp([0.75, 0.5]).sum()
    np.testing.assert_allclose(s.mixture(), want, rtol=1e-12)


def test_one_update_with_a_window_by_hand() -> None:
    s = skillit([[1.0, 0.5], [0.0, 1.0]], ["s0", "s1"], eta=0.5, window=3, update_steps=2)
    s.observe(0, {"s0": 2.0, "s1": 1.0})
    run_round(s, 0, {"s0": 1.0, "s1": 0.5})
    # window = e0 + e1 = [3, 1.5]; A·[3, 1.5] = [3.75, 1.5]; p ∝ exp(0.5 · [3.75, 1.5])
    assert s.mixture()[0] == pytest.approx(1 / (1 + math.exp(-0.5 * (3.75 - 1.5))), rel=1e-12)
    # a third evaluation and a window of 2: only the last two count
    s2 = skillit([[1.0, 0.5], [0.0, 1.0]], ["s0", "s1"], eta=0.5, window=2, update_steps=2)
    s2.observe(0, {"s0": 9.0, "s1": 9.0})
    run_round(s2, 0, {"s0": 1.0, "s1": 0.5})
    run_round(s2, 1, {"s0": 0.5, "s1": 0.5})
    agg = np.array([1.5, 1.0])
    logits = 0.5 * np.array([[1.0, 0.5], [0.0, 1.0]]) @ agg
    np.testing.assert_allclose(s2.mixture(), np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)


def test_mean_aggregate_and_normalized_loss() -> None:
    g = [[1.0, 0.0], [0.0, 1.0]]
    s = skillit(g, ["s0", "s1"], eta=1.0, window=2, aggregate="mean", normalize_loss=True, update_steps=1)
    s.observe(0, {"s0": 2.0, "s1": 4.0})
    run_round(s, 0, {"s0": 1.0, "s1": 1.0})
    # normalised: e0 = [1, 1], e1 = [0.5, 0.25]; mean = [0.75, 0.625]; identity A
    want = np.exp([0.75, 0.625]) / np.exp([0.75, 0.625]).sum()
    np.testing.assert_allclose(s.mixture(), want, rtol=1e-12)


def test_loss_ratio_eta_schedule() -> None:
    s = skillit(
        [[1.0, 0.0], [0.0, 1.0]], ["s0", "s1"], eta=1.0, window=1, eta_schedule="loss_ratio", update_steps=1
    )
    s.observe(0, {"s0": 2.0, "s1": 2.0})
    run_round(s, 0, {"s0": 1.0, "s1": 0.0})
    # η_t = 1 / (1 / 4) = 4; logits = 4 · [1, 0]
    assert s.mixture()[0] == pytest.approx(1 / (1 + math.exp(-4.0)), rel=1e-12)


def test_zero_losses_give_the_prior() -> None:
    s = skillit(
        [[1.0, 0.3, 0.0], [0.2, 1.0, 0.0], [0.0, 0.0, 1.0]],
        ["s0", "s1", "s2"],
        prior=[1, 2, 5],
        update_steps=1,
    )
    s.observe(0, {"s0": 0.0, "s1": 0.0, "s2": 0.0})
    run_round(s, 0, {"s0": 0.0, "s1": 0.0, "s2": 0.0})
    np.testing.assert_allclose(s.mixture(), [1 / 8, 2 / 8, 5 / 8], rtol=1e-12)


def test_identity_graph_is_a_softmax_and_all_ones_is_uniform() -> None:
    losses = {"s0": 0.2, "s1": 1.0, "s2": 3.0}
    s = skillit(np.eye(3), ["s0", "s1", "s2"], eta=0.8, window=1, update_steps=1)
    s.observe(0, losses)
    run_round(s, 0, losses)
    x = 0.8 * np.array([0.2, 1.0, 3.0])
    np.testing.assert_allclose(s.mixture(), np.exp(x) / np.exp(x).sum(), rtol=1e-12)
    u = skillit(np.ones((3, 3)), ["s0", "s1", "s2"], eta=0.8, window=1, update_steps=1)
    u.observe(0, losses)
    run_round(u, 0, losses)
    np.testing.assert_allclose(u.mixture(), [1 / 3] * 3, rtol=1e-12)


def test_fine_tuning_shape_lego_published_graph() -> None:
    # LEGO ft: training skills 1–3, target skill 3, A = [0, .5, 1]ᵀ (a 3 × 1 graph)
    s = SkillItSampler(
        ["l1", "l2", "l3"], SIZES, 0, np.array([[0.0], [0.5], [1.0]]), ["l3"], 0.5, aggregate="mean"
    )
    want = np.exp([0.0, 0.25, 0.5]) / np.exp([0.0, 0.25, 0.5]).sum()
    np.testing.assert_allclose(s.mixture(), want, rtol=1e-12)
    s.update_steps = 1
    s.observe(0, {"l1": 5.0, "l2": 5.0, "l3": 2.0})  # non-target losses are ignored
    run_round(s, 0, {"l1": 9.0, "l2": 9.0, "l3": 1.0})
    agg = (2.0 + 1.0) / 2
    want = np.exp(0.5 * np.array([0.0, 0.5, 1.0]) * agg)
    np.testing.assert_allclose(s.mixture(), want / want.sum(), rtol=1e-12)


def test_out_of_domain_shape() -> None:
    graph = np.array([[0.1, -0.2], [0.0, 0.4], [0.3, 0.3]])  # 3 training × 2 evaluation skills
    s = SkillItSampler(["a", "b", "c"], SIZES, 0, graph, ["x", "y"], 0.2, window=3, update_steps=1)
    s.observe(0, {"x": 1.0, "y": 2.0, "a": 0.0})
    run_round(s, 0, {"x": 0.5, "y": 1.0})
    logits = 0.2 * graph @ np.array([1.5, 3.0])
    np.testing.assert_allclose(s.mixture(), np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)
    with pytest.raises(SkillmixInputError, match=r"\(3, 2\)"):
        SkillItSampler(["a", "b", "c"], SIZES, 0, graph.T, ["x", "y"], 0.2)


def test_window_counts_rounds_or_evaluations() -> None:
    def make(unit):
        s = skillit(np.eye(2), ["s0", "s1"], eta=1.0, window=2, window_unit=unit, update_steps=4)
        s.observe(0, {"s0": 1.0, "s1": 1.0})
        for step in range(1, 5):
            s.sample(step, 2)
        s.observe(2, {"s0": 7.0, "s1": 0.0})  # a mid-round evaluation (eval_every = 2)
        s.observe(4, {"s0": 0.0, "s1": 1.0})
        return s.mixture()

    rounds, evaluations = make("rounds"), make("evaluations")
    np.testing.assert_allclose(rounds, np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum(), rtol=1e-12)
    np.testing.assert_allclose(evaluations, np.exp([7.0, 1.0]) / np.exp([7.0, 1.0]).sum(), rtol=1e-12)


def test_round_counts_are_deterministic_given_p() -> None:
    np.testing.assert_array_equal(round_counts(np.array([0.33, 0.33, 0.34]), 10), [3, 3, 4])
    np.testing.assert_array_equal(round_counts(np.array([0.5, 0.25, 0.25]), 8), [4, 2, 2])
    s = skillit([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], ["s0", "s1", "s2"], update_steps=5)
    seen = [k for step in range(1, 6) for k, _ in s.sample(step, 8)]
    np.testing.assert_array_equal(np.bincount(seen, minlength=3), round_counts(s.mixture(), 40))
    again = skillit([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], ["s0", "s1", "s2"], update_steps=5)
    first = [s.sample(step, 8) for step in range(6, 11)]
    assert [again.sample(step, 8) for step in range(1, 11)][5:] == first
    other = SkillItSampler(
        ["s0", "s1", "s2"], [50] * 3, 1, np.eye(3), ["s0", "s1", "s2"], 0.5, update_steps=5
    )
    assert [k for step in range(1, 6) for k, _ in other.sample(step, 8)] != seen


def test_mixture_history_and_resume() -> None:
    graph = [[1.0, 0.5], [0.0, 1.0]]
    a = skillit(graph, ["s0", "s1"], update_steps=2)
    a.observe(0, {"s0": 2.0, "s1": 1.0})
    run_round(a, 0, {"s0": 1.5, "s1": 0.2})
    state = a.state_dict()
    run_round(a, 1, {"s0": 1.0, "s1": 0.1})
    a.sample(5, 4)
    b = skillit(graph, ["s0", "s1"], update_steps=2)
    b.load_state_dict(state)
    run_round(b, 1, {"s0": 1.0, "s1": 0.1})
    b.sample(5, 4)
    np.testing.assert_allclose(a.mixture(), b.mixture())
    rows = a.mixture_rows()
    assert [r["round"] for r in rows] == [0, 0, 1, 1, 2, 2]
    assert [r["step"] for r in rows[::2]] == [1, 3, 5]
    assert sum(r["weight"] for r in rows if r["round"] == 2) == pytest.approx(1.0)


def test_target_only_and_its_errors() -> None:
    s = make_sampler("target_only", ["a", "b", "c"], SIZES, 0, targets=["c"])
    np.testing.assert_allclose(s.mixture(), [0, 0, 1])
    assert {k for step in range(1, 10) for k, _ in s.sample(step, 4)} == {2}
    with pytest.raises(SkillmixInputError, match="target_skills"):
        make_sampler("target_only", ["a", "b"], [5, 5], 0, targets=["z"])


def test_skill_curriculum_stages() -> None:
    s = SkillCurriculumSampler(["a", "b", "c"], [10, 20, 70], 0, [2.0, 0.5, 1.0], frac=0.4, update_steps=1)
    assert s.order == [1, 2, 0]
    np.testing.assert_allclose(s.round_mixture(0), [0, 1, 0])
    np.testing.assert_allclose(s.round_mixture(1), [0, 0.4, 0.6])
    np.testing.assert_allclose(s.round_mixture(2), [0.6, 0.2, 0.2])
    np.testing.assert_allclose(s.round_mixture(3), [0.1, 0.2, 0.7])  # then the natural mixture
    hard_first = SkillCurriculumSampler(["a", "b", "c"], [10, 20, 70], 0, [2.0, 0.5, 1.0], reverse=True)
    assert hard_first.order == [0, 2, 1]
    first = [k for step in range(1, 2) for k, _ in s.sample(step, 6)]
    assert set(first) == {1}


def test_curriculum_paces_from_easy_to_hard() -> None:
    losses = [
        [5.0, 1.0, 3.0, 9.0],
        [0.5, 7.0, 2.0, 8.0],
    ]  # easiest: (1,0) 0.5, (0,1) 1.0, (1,2) 2.0, (0,2) 3.0
    c = CurriculumSampler(["a", "b"], [4, 4], 0, losses, update_steps=1)
    first = c.sample(1, 2)
    assert sorted(first) == [(0, 1), (1, 0)]  # round 0's pool = the 2 easiest, drawn without replacement
    second = c.sample(2, 2)
    assert set(second) <= {(1, 0), (0, 1), (1, 2), (0, 2)}
    anti = CurriculumSampler(["a", "b"], [4, 4], 0, losses, reverse=True, update_steps=1)
    assert sorted(anti.sample(1, 2)) == [(0, 3), (1, 3)]
    assert anti.name == "anticurriculum"
    state = anti.state_dict()
    anti2 = CurriculumSampler(["a", "b"], [4, 4], 0, losses, reverse=True, update_steps=1)
    anti2.load_state_dict(state)
    assert anti2.sample(2, 2) == anti.sample(2, 2)


def test_make_sampler_needs_its_inputs() -> None:
    with pytest.raises(ValueError, match="graph"):
        make_sampler("skillit", ["a"], [3], 0)
    with pytest.raises(ValueError, match="per-example losses"):
        make_sampler("curriculum", ["a"], [3], 0)
    with pytest.raises(SkillmixInputError, match="unknown strategy"):
        make_sampler("magic", ["a"], [3], 0)


def test_a_graph_of_large_values_gives_a_finite_initial_mixture() -> None:
    # row sums × η far beyond exp's range (709): the mixture is the limit, never NaN
    s = skillit([[1e4, 0.0], [0.0, 1e3]], ["s0", "s1"], eta=1.0)
    np.testing.assert_allclose(s.mixture(), [1.0, 0.0])
    s = skillit([[1e4, 0.0], [0.0, 1e4]], ["s0", "s1"], eta=1.0)
    np.testing.assert_allclose(s.mixture(), [0.5, 0.5])
