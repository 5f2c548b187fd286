"""Aioli (Chen et al., ICLR 2025; docs/methods/mixers.md#aioli): the worked example by hand, the
properties of LearnParams, the round layout, setup errors, resume, and a short run on the engine."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from skillmix.engine.encoding import encode_frame
from skillmix.engine.modeling import build_tiny_model, select_runtime
from skillmix.engine.sampling import MixingInputs
from skillmix.engine.tokenizers import byte_tokenizer
from skillmix.engine.training import TrainSettings, train
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.aioli import AioliSampler
from skillmix.mixing.aioli_params import normalise_params, smoothed_one_hot, softmax, sweep_order, unmix
from skillmix.mixing.strategies import build_sampler, strategy_settings

SKILLS = ["a", "b", "c"]


def aioli(skills=SKILLS, steps=0, eval_skills=None, update_steps=20, seed=0, **block) -> AioliSampler:
    """An Aioli sampler as a run builds it: the completed block, the run's budget in its inputs."""
    inputs = MixingInputs(
        skills=list(skills),
        sizes=[50] * len(skills),
        seed=seed,
        update_steps=update_steps,
        eval_skills=list(eval_skills or skills),
        steps=steps,
    )
    return build_sampler("aioli", inputs, strategy_settings("aioli", block))


def toy_losses(skills, step: int, seed: int = 0) -> dict[str, float]:
    """Validation losses that fall with the step, differently per skill, with a little noise."""
    rng = np.random.default_rng([seed, step])
    return {s: 3.0 / (1 + 0.05 * step * (i + 1)) + 0.01 * float(rng.random()) for i, s in enumerate(skills)}


def drive(sampler, first: int, last: int, losses=None, every: int = 0, batch: int = 4) -> list[int]:
    """Sample steps first..last as the engine does, evaluating when the sampler asks (and every
    `every` steps); returns the evaluation steps."""
    losses = losses or (lambda step: toy_losses(sampler.eval_skills, step))
    if first == 1:
        sampler.observe(0, losses(0))
    evaluated = []
    for step in range(first, last + 1):
        sampler.sample(step, batch)
        if sampler.needs_eval(step) or (every and step % every == 0):
            sampler.observe(step, losses(step))
            evaluated.append(step)
    return evaluated


# --- the worked example and the arithmetic --------------------------------------------------------


def test_worked_example_by_hand() -> None:
    """k = m = 2, lp_rounds = 1, order [1, 2], f = 0.75, η = 1, no EMA (docs/methods/mixers.md#aioli)."""
    M = np.array([[0.2, 0.05], [0.1, 0.2]])
    np.testing.assert_allclose(smoothed_one_hot(2, 0.75), [[0.75, 0.25], [0.25, 0.75]])
    A = unmix(M, 0.75)
    np.testing.assert_allclose(A, [[0.275, -0.025], [0.05, 0.25]], atol=1e-12)
    bar, degenerate = normalise_params(A)
    assert not degenerate
    np.testing.assert_allclose(bar, np.array([[0.3, 0.0], [0.075, 0.275]]) / 0.65, atol=1e-12)
    np.testing.assert_allclose(bar.sum(0), [0.576923, 0.423077], atol=1e-6)
    np.testing.assert_allclose(softmax(bar.sum(0)), [0.538386, 0.461614], atol=1e-6)

    # the same numbers through the sampler: a seed whose round-0 order is [skill 1, skill 2]
    seed = next(s for s in range(100) if sweep_order(s, 0, 2, 1) == [0, 1])
    s = aioli(["x", "y"], steps=6, update_steps=3, seed=seed, lp_rounds=1, lp_steps=1,
              one_hot_factor=0.75, eta=1.0, ema=None)  # fmt: skip
    measured = {0: (2.0, 2.0), 1: (1.8, 1.9), 2: (1.75, 1.7)}
    s.observe(0, dict(zip("xy", measured[0], strict=True)))
    for step in (1, 2):
        s.sample(step, 4)
        np.testing.assert_allclose(s.mixture(), [[0.75, 0.25], [0.25, 0.75]][step - 1])
        assert s.needs_eval(step)
        s.observe(step, dict(zip("xy", measured[step], strict=True)))
    s.sample(3, 4)
    np.testing.assert_allclose(s.mixture(), [0.538386, 0.461614], atol=1e-6)
    np.testing.assert_allclose(s.learned[0]["params"], A, atol=1e-12)


def test_one_hot_learnparams_measures_A_directly() -> None:
    """f = 1 and lp_rounds = 1: A is the chained loss drops, column by column."""
    s = aioli(steps=20, update_steps=10, lp_rounds=1, lp_steps=2, one_hot_factor=1.0, ema=None)
    drive(s, 1, 6)
    order = s.order(0)
    want = np.zeros((3, 3))
    for n, j in enumerate(order):
        before, after = toy_losses(SKILLS, 2 * n), toy_losses(SKILLS, 2 * n + 2)
        want[:, j] = [before[x] - after[x] for x in SKILLS]
    np.testing.assert_allclose(s.learned[0]["params"], want, rtol=1e-12)


def test_unmixing_inverts_mixing() -> None:
    rng = np.random.default_rng(3)
    for k, m, f in [(2, 2, 0.625), (3, 1, 0.5), (4, 3, 0.9), (5, 5, 0.21)]:
        A = rng.normal(size=(m, k))
        M = A @ smoothed_one_hot(k, f).T  # row i: P · A[i, :]
        np.testing.assert_allclose(unmix(M, f), A, atol=1e-10)
    M = rng.normal(size=(3, 3))
    np.testing.assert_allclose(unmix(M, 0.8, diagonal=True), np.diag(np.diag(M) / 0.8))


def test_normalisation_properties() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        A = rng.normal(size=(3, 4))
        bar, degenerate = normalise_params(A)
        assert not degenerate and (bar >= 0).all() and bar.sum() == pytest.approx(1.0)
        for c in (-3.0, -0.5, 0.5 * -A.min()):  # the shift still applies: min(A + c) < 0
            np.testing.assert_allclose(normalise_params(A + c)[0].sum(0), bar.sum(0), atol=1e-12)
    for equal in (-0.3, 0.0):  # nothing left after the shift: no change from this round
        bar, degenerate = normalise_params(np.full((2, 2), equal))
        assert degenerate and (bar == 0).all()
    bar, degenerate = normalise_params(np.full((2, 2), 0.3))  # no shift: every entry 1/4
    assert not degenerate and np.allclose(bar, 0.25)


def test_no_loss_moved_changes_nothing(caplog) -> None:
    s = aioli(steps=40, update_steps=20, lp_rounds=1, lp_steps=2, ema=None)
    flat = {x: 2.0 for x in SKILLS}
    with caplog.at_level("INFO", logger="skillmix.mixing.aioli"):
        drive(s, 1, 7, losses=lambda step: flat)
    np.testing.assert_allclose(s.mixture(), [1 / 3] * 3)
    assert s.learned[0]["degenerate"] and "no change" in caplog.text


def test_ema_recomputes_and_egd_multiplies() -> None:
    def rounds(**block):
        s = aioli(steps=60, update_steps=20, lp_rounds=2, lp_steps=2, eta=2.0, **block)
        drive(s, 1, 60)
        bars = [normalise_params(np.asarray(x["params"]))[0] for x in s.learned]
        mixtures = [np.asarray(h["weights"]) for h in s.history if h["round"] % 7 == 6]
        return s, bars, mixtures

    s, bars, mixtures = rounds(ema=0.3)
    assert len(bars) == len(mixtures) == 3
    E = bars[0]
    for r, bar in enumerate(bars):
        E = bar if r == 0 else 0.7 * bar + 0.3 * E
        np.testing.assert_allclose(mixtures[r], softmax(2.0 * E.sum(0)), rtol=1e-10)
    s, bars, mixtures = rounds(ema=None)
    np.testing.assert_allclose(mixtures[0], softmax(2.0 * bars[0].sum(0)), rtol=1e-10)
    for r in (1, 2):
        ratio = mixtures[r] / mixtures[r - 1]
        np.testing.assert_allclose(ratio / ratio.sum(), softmax(2.0 * bars[r].sum(0)), rtol=1e-10)


# --- layout, evaluations, resume ------------------------------------------------------------------


def test_a_round_is_learnparams_then_the_learned_mixture() -> None:
    s = aioli(steps=30, update_steps=15, lp_rounds=2, lp_steps=2, one_hot_factor=0.6)
    evaluated = drive(s, 1, 30)
    assert evaluated == [2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27]
    P = smoothed_one_hot(3, 0.6)
    starts = [h["step"] for h in s.history]
    assert starts == [1, 3, 5, 7, 9, 11, 13, 16, 18, 20, 22, 24, 26, 28]
    for r in (0, 1):
        rows = s.history[7 * r : 7 * r + 7]
        for n, j in enumerate(s.order(r)):
            np.testing.assert_allclose(rows[n]["weights"], P[j])
        assert s.segment(rows[6]["step"]) == (7 * r + 6, rows[6]["step"], 3)
    assert sorted(s.order(0)[:3]) == [0, 1, 2] and sorted(s.order(0)[3:]) == [0, 1, 2]
    assert s.cost() == {"extra_runs": 0, "extra_steps": 0, "extra_examples": 0, "extra_evaluations": 12}


def test_prior_phase_comes_first() -> None:
    s = aioli(steps=25, update_steps=10, lp_rounds=1, lp_steps=2, prior=[1, 0, 1], prior_steps=5)
    evaluated = drive(s, 1, 25)
    assert evaluated == [5, 7, 9, 11, 15, 17, 19, 21]
    assert s.segment(3) == (0, 1, 5) and s.segment(6) == (1, 6, 2) and s.segment(12) == (4, 12, 4)
    np.testing.assert_allclose(s.history[0]["weights"], [0.5, 0, 0.5])


def test_other_evaluations_are_only_read_not_used() -> None:
    a = aioli(steps=40, update_steps=20, lp_rounds=1, lp_steps=3)
    b = aioli(steps=40, update_steps=20, lp_rounds=1, lp_steps=3)
    drive(a, 1, 40)
    drive(b, 1, 40, every=4)
    assert a.history == b.history and a.learned == b.learned


def test_resume_inside_learnparams_reproduces_the_run() -> None:
    full = aioli(steps=40, update_steps=20, lp_rounds=2, lp_steps=2, ema=None)
    drive(full, 1, 40)
    for stop in (3, 4, 7, 13, 25):
        first = aioli(steps=40, update_steps=20, lp_rounds=2, lp_steps=2, ema=None)
        drive(first, 1, stop)
        state = json.loads(json.dumps(first.state_dict()))
        again = aioli(steps=40, update_steps=20, lp_rounds=2, lp_steps=2, ema=None)
        again.load_state_dict(state)
        drive(again, stop + 1, 40)
        assert again.history == full.history, stop
        assert again.learned == full.learned and again.draws == full.draws


def test_one_skill_is_plain_training() -> None:
    s = aioli(["only"], steps=10, update_steps=5)
    assert drive(s, 1, 10) == []
    assert s.mixture().tolist() == [1.0] and s.segment(7) == (1, 6, 5)


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "keys"),
    [
        ({"update_steps": 24, "lp_rounds": 2, "lp_steps": 4}, r"train\.update_steps.*aioli\.lp_rounds"),
        ({"steps": 50, "update_steps": 20}, r"train\.steps.*aioli\.prior_steps.*train\.update_steps"),
        ({"one_hot_factor": 1 / 3}, r"aioli\.one_hot_factor"),
        ({"one_hot_factor": 0.2}, r"aioli\.one_hot_factor"),
        ({"diagonal": True, "one_hot_factor": 1.0}, r"aioli\.diagonal"),
        ({"diagonal": True, "eval_skills": ["a"]}, r"aioli\.diagonal"),
        ({"prior_steps": 5}, r"aioli\.prior"),
        ({"prior": [1, 1, 1]}, r"aioli\.prior"),
        ({"prior": [1, 1], "prior_steps": 5}, r"aioli\.prior needs 3"),
        ({"steps": 45, "prior": [1, 1, 1], "prior_steps": 10, "update_steps": 20}, r"aioli\.prior_steps"),
    ],
)
def test_setup_errors_name_the_keys(kw, keys) -> None:
    with pytest.raises(SkillmixInputError, match=keys):
        aioli(lp_rounds=kw.pop("lp_rounds", 1), lp_steps=kw.pop("lp_steps", 2), **kw)


def test_a_nan_loss_names_the_skill_and_the_step() -> None:
    s = aioli(steps=40, update_steps=20, lp_rounds=1, lp_steps=2)
    s.observe(0, toy_losses(SKILLS, 0))
    with pytest.raises(FloatingPointError, match=r"'b'.*step 2"):
        s.observe(2, {"a": 1.0, "b": float("nan"), "c": 1.0})
    with pytest.raises(SkillmixInputError, match=r"\['c'\]"):
        s.observe(2, {"a": 1.0, "b": 1.0})


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


@pytest.fixture(scope="module")
def toy():
    tok = byte_tokenizer()
    offsets = {"copy": 0, "shift": 3}
    tr = [encode_frame(tok, toy_frame(s, 64, i, o), s, 48) for i, (s, o) in enumerate(offsets.items())]
    va = [encode_frame(tok, toy_frame(s, 16, 9 + i, o), s, 48) for i, (s, o) in enumerate(offsets.items())]
    return tok, list(offsets), tr, va


def test_aioli_trains_on_the_engine_and_resumes_inside_learnparams(toy, tmp_path) -> None:
    tok, skills, tr, va = toy
    settings = TrainSettings(
        steps=12, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=5, update_steps=6, resume_every=3
    )

    def run(**kw):
        model, _ = build_tiny_model(TINY, seed=0)
        sampler = aioli(skills, steps=12, update_steps=6, lp_rounds=1, lp_steps=2, one_hot_factor=0.75)
        return train(model, tok, tr, sampler, settings, CPU, val_sets=va, **kw), sampler

    full, sampler = run()
    assert sorted(full.val_curve.step.unique()) == [0, 2, 4, 5, 6, 8, 10, 12]
    starts = full.mixtures.drop_duplicates("round").step.tolist()
    assert starts == [1, 3, 5, 7, 9, 11]  # LearnParams 2 + 2 steps, then 2 on p_r, per round
    weights = full.mixtures.pivot(index="round", columns="skill", values="weight")[skills].to_numpy()
    assert sorted(weights[0].round(6)) == [0.25, 0.75] and sorted(weights[1].round(6)) == [0.25, 0.75]
    assert len(sampler.learned) == 2 and np.all(weights[2] > 0)
    counts = full.skill_counts.pivot(index="step", columns="skill", values="count")[skills].to_numpy()
    assert (counts.sum(1) == 8).all() and sorted(counts[:2].sum(0)) == [4, 12]  # floor(0.75 · 16)

    ckpt = tmp_path / "ckpt"
    stopped, _ = run(resume_dir=ckpt, fingerprint_="aioli", stop_after=4)
    assert not stopped.completed and [p.name for p in ckpt.iterdir()] == ["step-00000003"]
    resumed, _ = run(resume_dir=ckpt, fingerprint_="aioli")  # step 3 is inside LearnParams
    assert resumed.resumed_from == 3
    pd.testing.assert_frame_equal(resumed.mixtures, full.mixtures)
    pd.testing.assert_frame_equal(resumed.val_curve, full.val_curve)
    pd.testing.assert_frame_equal(resumed.steps, full.steps)
