"""Which evaluations Skill-It's update reads (`skillit.window_unit`), against hand-made schedules.

The original code (HazyResearch/skill-it, trainer/mw_trainer.py) evaluates when its counter c of
completed steps minus one is a multiple of ckpt_steps, i.e. after 1-based steps 1, 1 + ckpt,
1 + 2·ckpt, …, and updates after a round from the last `mw_window` evaluations in its list.
"""

from __future__ import annotations

import numpy as np
import pytest

from skillmix.engine.sampling import MixingInputs
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.skillit import SkillItSampler
from skillmix.mixing.strategies import build_sampler, strategy_settings

GRAPH = np.array([[1.0, 0.5], [0.0, 1.0]])
SKILLS = ["s0", "s1"]


def losses_at(step: int) -> dict[str, float]:
    """A validation loss per skill that differs at every step, so a window tells its steps apart."""
    return {"s0": 1.0 / (1.0 + 0.001 * step), "s1": 2.0 / (1.0 + 0.003 * step)}


def expected(window_steps: list[int], eta: float) -> np.ndarray:
    """p ∝ exp(η · A · Σ_{s in window} L(s)) (uniform prior, sum aggregate)."""
    agg = np.sum([[losses_at(s)[k] for k in SKILLS] for s in window_steps], axis=0)
    logits = eta * GRAPH @ agg
    p = np.exp(logits - logits.max())
    return p / p.sum()


def run(unit: str, steps: int, update_steps: int, eval_every: int, window: int = 3) -> dict[int, np.ndarray]:
    """Drive a sampler as `engine.training` does (evaluation before step 1, after every step that
    is a multiple of eval_every, the last one, or one the sampler asks for); return the mixture
    in force for each round (0-based)."""
    s = SkillItSampler(
        SKILLS, [50, 50], 0, GRAPH, SKILLS, 0.5, window=window, window_unit=unit,
        update_steps=update_steps, eval_every=eval_every,
    )  # fmt: skip
    s.observe(0, losses_at(0))
    mixtures = {0: s.mixture()}
    for step in range(1, steps + 1):
        s.sample(step, 2)
        if step % eval_every == 0 or step == steps or s.needs_eval(step):
            s.observe(step, losses_at(step))
        if step % update_steps == 0:
            mixtures[step // update_steps] = s.mixture()
    return mixtures


def original_schedule(steps: int, update_steps: int, ckpt_steps: int, window: int) -> dict[int, list[int]]:
    """The original code's bookkeeping, replayed step by step: the 1-based steps whose evaluations
    the update after each round reads (round r + 1's mixture)."""
    evaluated, windows, counter = [], {}, 0
    while counter < steps:
        for _ in range(update_steps):
            if counter % ckpt_steps == 0:
                evaluated.append(counter + 1)  # evaluated after the step that made counter c
            counter += 1
        if counter == steps:
            break
        windows[counter // update_steps] = evaluated[-window:]
    return windows


def test_original_timing_lego_pretraining() -> None:
    """LEGO pt (6 rounds of 1,000 steps, checkpoints every 50, window 3): the update after round 1
    reads the evaluations after steps 851, 901 and 951, not those at 900, 950 and 1,000."""
    by_hand = {1: [851, 901, 951], 2: [1851, 1901, 1951], 5: [4851, 4901, 4951]}
    replayed = original_schedule(6000, 1000, 50, 3)
    assert {r: replayed[r] for r in by_hand} == by_hand and sorted(replayed) == [1, 2, 3, 4, 5]
    mixtures = run("original", 6000, 1000, 50)
    for r, window_steps in replayed.items():
        np.testing.assert_allclose(mixtures[r], expected(window_steps, 0.5), rtol=1e-12)
    # what the other units read after round 1
    evaluations, rounds = run("evaluations", 2000, 1000, 50)[1], run("rounds", 2000, 1000, 50)[1]
    np.testing.assert_allclose(evaluations, expected([900, 950, 1000], 0.5), rtol=1e-12)
    np.testing.assert_allclose(rounds, expected([0, 1000], 0.5), rtol=1e-12)


def test_original_timing_one_evaluation_per_round() -> None:
    """NI fine-tuning (checkpoint = round = 100 steps, window 3): one evaluation per round, after
    its first step; the window fills over three rounds."""
    by_hand = {1: [1], 2: [1, 101], 3: [1, 101, 201], 4: [101, 201, 301], 5: [201, 301, 401]}
    assert original_schedule(600, 100, 100, 3) == by_hand
    mixtures = run("original", 600, 100, 100)
    for r, window_steps in by_hand.items():
        np.testing.assert_allclose(mixtures[r], expected(window_steps, 0.5), rtol=1e-12)


def test_original_asks_for_its_evaluations_and_needs_a_cadence() -> None:
    s = SkillItSampler(
        SKILLS, [50, 50], 0, GRAPH, SKILLS, 0.5, window_unit="original", update_steps=100, eval_every=50
    )
    assert [t for t in range(1, 201) if s.needs_eval(t)] == [1, 51, 100, 101, 151, 200]
    rounds = SkillItSampler(SKILLS, [50, 50], 0, GRAPH, SKILLS, 0.5, update_steps=100, eval_every=50)
    assert [t for t in range(1, 201) if rounds.needs_eval(t)] == [100, 200]
    with pytest.raises(SkillmixInputError, match="train.eval_every"):
        SkillItSampler(SKILLS, [50, 50], 0, GRAPH, SKILLS, 0.5, window_unit="original", update_steps=100)
    with pytest.raises(SkillmixInputError, match="window_unit"):
        SkillItSampler(SKILLS, [50, 50], 0, GRAPH, SKILLS, 0.5, window_unit="steps")


def test_original_from_the_config() -> None:
    """The schema accepts the value and the run's train.eval_every reaches the sampler."""
    assert complete("skillit", None)["window_unit"] == "rounds"
    settings = strategy_settings("skillit", {"window_unit": "original"})
    inputs = MixingInputs(
        skills=SKILLS, sizes=[50, 50], seed=0, update_steps=100, eval_skills=SKILLS,
        graph=GRAPH, eval_every=25,
    )  # fmt: skip
    sampler = build_sampler("skillit", inputs, settings)
    assert sampler.window_unit == "original" and sampler.eval_every == 25
    assert sampler.needs_eval(26) and not sampler.needs_eval(25)
