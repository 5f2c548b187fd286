"""Aioli's online mixture (Chen et al., "Aioli: A Unified Optimization Framework for Language Model
Data Mixing", ICLR 2025; docs/methods/mixers.md#aioli).

Every round of `train.update_steps` steps first learns the linear mixing law's parameters A from the
run itself (LearnParams: short intervals on smoothed one-hot mixtures, each followed by a validation
evaluation), then trains the rest of the round on the mixture they give. The LearnParams steps are
real optimiser steps of the evaluated model and count inside `train.steps`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from skillmix.engine.sampling import MixingInputs, SkillSampler, normalise
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.aioli_params import (
    check_setup,
    mixture_summary,
    normalise_params,
    smoothed_one_hot,
    softmax,
    sweep_order,
    unmix,
)

log = logging.getLogger(__name__)

REGISTER = [
    {
        "name": "aioli",
        "worker": "AioliSampler",
        "summary": "Aioli: mixing-law parameters learned inside every round, then an exponentiated update",
        "settings": "aioli",
        "needs": ["val_losses"],
    },
]
"""This module's strategy in the registry (skillmix.infra.registry)."""


class AioliSampler(SkillSampler):
    """Aioli (Chen et al., ICLR 2025, Alg. 1 with the released code's EMA branch;
    docs/methods/mixers.md#aioli).

    Round r (steps b_r + 1 … b_r + U, b_r = prior_steps + r·U) is lp_rounds·k LearnParams segments
    of lp_steps steps, segment n on the smoothed one-hot mixture of skill order[n], each followed by
    an evaluation (`needs_eval`), and one segment of the remaining U − L steps on p_r. The chained
    loss drops go to column order[n] of M; averaged over the sweeps, unmixed, normalised and
    smoothed they give p_r ∝ exp(η · colsum(E_r)) with `ema` γ, or p_r ∝ p_{r−1} ⊙ exp(η · colsum(Ā_r))
    without. A prior phase (`prior`, `prior_steps`) comes first as segment 0. With one skill the
    mixture is [1] in rounds of U steps. `steps` is train.steps (0: unknown, rounds go on).
    """

    name = "aioli"

    def __init__(
        self,
        skills: list[str],
        sizes: list[int],
        seed: int,
        eval_skills: list[str],
        *,
        eta: float = 0.2,
        lp_rounds: int = 4,
        lp_steps: int = 4,
        one_hot_factor: float = 0.625,
        ema: float | None = 0.1,
        normalize: bool = True,
        diagonal: bool = False,
        prior: list[float] | None = None,
        prior_steps: int = 0,
        update_steps: int = 100,
        steps: int = 0,
    ) -> None:
        super().__init__(skills, sizes, np.ones(len(skills)), seed, update_steps)
        k = len(skills)
        self.eval_skills = list(eval_skills)
        if k == 1:
            log.info("aioli: one training skill, the mixture is [1] (no LearnParams)")
        else:
            cfg = {
                "lp_rounds": lp_rounds,
                "lp_steps": lp_steps,
                "one_hot_factor": one_hot_factor,
                "diagonal": diagonal,
                "prior": prior,
                "prior_steps": prior_steps,
            }
            check_setup(k, self.eval_skills == self.skills, cfg, self.update_steps, int(steps))
        self.eta, self.factor = float(eta), float(one_hot_factor)
        self.lp_rounds, self.lp_steps = int(lp_rounds), int(lp_steps)
        self.ema = None if ema is None else float(ema)
        self.normalize, self.diagonal = bool(normalize), bool(diagonal)
        self.prior = None if prior is None or k == 1 else normalise(np.asarray(prior, dtype=np.float64))
        self.prior_steps = int(prior_steps) if self.prior is not None else 0
        self.steps = int(steps)
        self.n_intervals = self.lp_rounds * k
        self.lp_total = self.n_intervals * self.lp_steps
        self.smoothed = smoothed_one_hot(k, self.factor) if k > 1 else np.ones((1, 1))
        m = len(self.eval_skills)
        self.measured = np.zeros((m, k))
        self.last: np.ndarray | None = None
        self.last_step = -1
        self.logits: np.ndarray | None = None
        self.smoothed_params: np.ndarray | None = None
        self.weights = np.full(k, 1.0 / k)
        self.mixture_round = -1
        self.lp_evaluations = 0
        self.learned: list[dict[str, Any]] = []

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """Aioli on the run's skills and evaluation skills; `settings` is the completed `aioli` block;
        the run's budget is `inputs.steps` (train.steps)."""
        cfg = dict(settings)
        steps = int(inputs.steps)
        return cls(
            inputs.skills,
            inputs.sizes,
            inputs.seed,
            inputs.eval_skills,
            update_steps=inputs.update_steps,
            steps=steps,
            **cfg,  # the completed `aioli` block: every key is an AioliSampler option
        )

    # --- layout: segments, rounds and the evaluations LearnParams needs ----------------------------

    @property
    def _offset(self) -> int:
        """Segments before round 0 (the prior phase)."""
        return 1 if self.prior_steps else 0

    def rounds(self) -> int | None:
        """Rounds in the run (None when train.steps is unknown)."""
        return (self.steps - self.prior_steps) // self.update_steps if self.steps else None

    def round_start(self, round_: int) -> int:
        """b_r: the step after which round `round_` starts (its ℓ⁰ is measured there)."""
        return self.prior_steps + round_ * self.update_steps

    def order(self, round_: int) -> list[int]:
        """The skill of each LearnParams interval of round `round_`."""
        return sweep_order(self.seed, round_, len(self.skills), self.lp_rounds)

    def segment(self, step: int) -> tuple[int, int, int]:
        """(index, first step, length) of the segment holding step `step`: the prior phase, a
        LearnParams interval, or the rest of a round on p_r."""
        if len(self.skills) == 1:
            return super().segment(step)
        if step <= self.prior_steps:
            return 0, 1, self.prior_steps
        r, off = divmod(step - self.prior_steps - 1, self.update_steps)
        index = self._offset + r * (self.n_intervals + 1)
        first = self.round_start(r) + 1
        if off < self.lp_total:
            n = off // self.lp_steps
            return index + n, first + n * self.lp_steps, self.lp_steps
        return index + self.n_intervals, first + self.lp_total, self.update_steps - self.lp_total

    def _role(self, step: int) -> tuple[int, int] | None:
        """(round, n) when the evaluation after `step` is one LearnParams reads: n = 0 the round's
        start, n ≥ 1 the end of interval n; None for any other evaluation."""
        if len(self.skills) == 1 or step < self.prior_steps:
            return None
        r, off = divmod(step - self.prior_steps, self.update_steps)
        if off == 0:
            total = self.rounds()
            return (r, 0) if total is None or r < total else None
        if off <= self.lp_total and off % self.lp_steps == 0:
            return r, off // self.lp_steps
        return None

    def needs_eval(self, step: int) -> bool:
        """An evaluation at every round's start and after every LearnParams interval."""
        return self._role(step) is not None

    # --- mixtures ------------------------------------------------------------------------------------

    def round_mixture(self, round_: int) -> np.ndarray:
        """The mixture of segment `round_` (an index of `segment`): the prior, P_j of its LearnParams
        interval, or p_r after the round's LearnParams."""
        p = self._segment_mixture(round_)
        top, entropy = mixture_summary(p / p.sum())
        log.info("aioli segment %d: max p %.4f, entropy %.4f", round_, top, entropy)
        return p

    def _segment_mixture(self, index: int) -> np.ndarray:
        if len(self.skills) == 1:
            return np.ones(1)
        if index < self._offset:
            return self.prior
        r, n = divmod(index - self._offset, self.n_intervals + 1)
        if n < self.n_intervals:
            start = self.round_start(r) + n * self.lp_steps
            if self.last_step != start:
                raise RuntimeError(
                    f"aioli: LearnParams interval {n + 1} of round {r} starts without the validation "
                    f"evaluation after step {start}; Aioli needs validation sets (needs_eval)"
                )
            return self.smoothed[self.order(r)[n]].copy()
        if self.mixture_round != r:
            raise RuntimeError(f"aioli: round {r}'s LearnParams did not finish before its mixture was asked")
        return self.weights.copy()

    def observe(self, step: int, losses: dict[str, float]) -> None:
        """Take the evaluation after `step`: a round's start sets ℓ⁰, the end of LearnParams interval
        n adds ℓⁿ⁻¹ − ℓⁿ to column order[n] of M (and the last one learns p_r); other evaluations are
        only checked."""
        vector = self._loss_vector(step, losses)
        role = self._role(step)
        if role is None:
            return
        r, n = role
        if n == 0:
            self.measured = np.zeros_like(self.measured)
            self.last, self.last_step = vector, step
            return
        if self.last_step != step - self.lp_steps:
            raise RuntimeError(
                f"aioli: no validation evaluation after step {step - self.lp_steps}, the start of "
                f"LearnParams interval {n} of round {r}"
            )
        self.measured[:, self.order(r)[n - 1]] += self.last - vector
        self.last, self.last_step = vector, step
        self.lp_evaluations += 1
        if n == self.n_intervals:
            self._learn(r, step)

    def _loss_vector(self, step: int, losses: dict[str, float]) -> np.ndarray:
        """The evaluation skills' losses; a missing or non-finite one is an error naming it."""
        missing = [s for s in self.eval_skills if s not in losses]
        if missing:
            raise SkillmixInputError(
                f"aioli: no validation loss for evaluation skills {missing} at step {step}"
            )
        for skill in self.eval_skills:
            if not np.isfinite(losses[skill]):
                raise FloatingPointError(
                    f"aioli: validation loss of skill {skill!r} is {losses[skill]} after step {step}"
                )
        return np.array([float(losses[s]) for s in self.eval_skills])

    def _learn(self, round_: int, step: int) -> None:
        """p_r from the round's measurements: average, unmix, normalise, smooth (EMA) or EGD."""
        params = unmix(self.measured / self.lp_rounds, self.factor, self.diagonal)
        degenerate = False
        if self.normalize:
            scaled, degenerate = normalise_params(params)
            if degenerate:
                log.info("aioli round %d: learned parameters all equal after the shift; no change", round_)
        else:
            scaled = params
        if self.ema is None:
            previous = np.zeros(len(self.skills)) if self.logits is None else self.logits
            logits = previous + self.eta * scaled.sum(0)
        else:
            old = self.smoothed_params
            self.smoothed_params = scaled if old is None else (1 - self.ema) * scaled + self.ema * old
            logits = self.eta * self.smoothed_params.sum(0)
        self.logits = logits - logits.max()
        self.weights = softmax(self.logits)
        self.mixture_round = round_
        self.learned.append(
            {"round": round_, "step": step, "params": params.tolist(), "degenerate": degenerate}
        )

    def cost(self) -> dict[str, int]:
        """LearnParams adds lp_rounds · k evaluations per round (its steps are inside train.steps)."""
        total = self.rounds()
        evaluations = (
            self.lp_evaluations if total is None or len(self.skills) == 1 else total * self.n_intervals
        )
        return {"extra_runs": 0, "extra_steps": 0, "extra_examples": 0, "extra_evaluations": evaluations}

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: M, the last measured losses, the logits, the EMA, p_r."""
        return {
            **super().state_dict(),
            "measured": self.measured.tolist(),
            "last": None if self.last is None else self.last.tolist(),
            "last_step": self.last_step,
            "logits": None if self.logits is None else self.logits.tolist(),
            "smoothed_params": None if self.smoothed_params is None else self.smoothed_params.tolist(),
            "weights": self.weights.tolist(),
            "mixture_round": self.mixture_round,
            "lp_evaluations": self.lp_evaluations,
            "learned": [dict(x) for x in self.learned],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by `state_dict`."""
        super().load_state_dict(state)

        def array(value: Any) -> np.ndarray | None:
            return None if value is None else np.asarray(value, dtype=np.float64)

        self.measured = array(state["measured"])
        self.last = array(state["last"])
        self.last_step = int(state["last_step"])
        self.logits = array(state["logits"])
        self.smoothed_params = array(state["smoothed_params"])
        self.weights = array(state["weights"])
        self.mixture_round = int(state["mixture_round"])
        self.lp_evaluations = int(state["lp_evaluations"])
        self.learned = [dict(x) for x in state["learned"]]
