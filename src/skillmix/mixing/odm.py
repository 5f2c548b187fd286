"""Online data mixing (Albalak et al., "Efficient Online Data Mixing For Language Model
Pre-Training", arXiv 2312.02406, 2023; docs/methods/mixers.md#odm).

A K-armed bandit over the training skills, rewarded every step by each skill's mean training loss
in the step's batch: skills with more left to learn are drawn more often. Every step is a segment of
its own, its slots drawn independently from the policy (`multinomial` allocation), so the
exploration floor ε_t is honoured even when ε_t · B < 1.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from skillmix.engine.sampling import BatchStats, MixingInputs, SkillSampler
from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)

REGISTER = [
    {
        "name": "odm",
        "worker": "ODMSampler",
        "summary": "online data mixing: a bandit over skills rewarded by each step's training loss",
        "settings": "odm",
        "needs": ["batch_losses"],
    },
]
"""This module's strategy in the registry (skillmix.infra.registry)."""

VARIANTS = ("paper", "code_smoothed_mean", "code_exp3")


def exploration_rate(t: int, k: int) -> float:
    """ε_t = min(1/K, sqrt(ln K / (K·t))) for t ≥ 1, ε_0 = 1/K (0 for K = 1 and t ≥ 1)."""
    if t <= 0:
        return 1.0 / k
    return min(1.0 / k, math.sqrt(math.log(k) / (k * t)))


def gibbs_policy(rewards: np.ndarray, eps: float, temperature: float) -> np.ndarray:
    """π(i) = (1 − K·eps) · exp(temperature · R̂_i) / Σ_j exp(temperature · R̂_j) + eps (the
    exponent shifted by its largest value)."""
    logits = temperature * np.asarray(rewards, dtype=np.float64)
    e = np.exp(logits - logits.max())
    return (1.0 - len(e) * eps) * e / e.sum() + eps


def warmup_steps(warmup: float, steps: int) -> int:
    """W from `odm.warmup`: a number in [0, 1) is a share of train.steps (rounded down), a whole
    number ≥ 1 a count of steps."""
    if isinstance(warmup, bool) or not math.isfinite(warmup) or warmup < 0:
        raise SkillmixInputError(f"odm.warmup must be a share in [0, 1) or whole steps >= 1, got {warmup!r}")
    if warmup >= 1:
        if int(warmup) != warmup:
            raise SkillmixInputError(f"odm.warmup of 1 or more counts steps and must be whole, got {warmup}")
        return int(warmup)
    if warmup == 0:
        return 0
    if steps <= 0:
        raise SkillmixInputError(
            f"odm.warmup = {warmup} is a share of train.steps, which this ODM sampler was not given "
            "(the run's `steps`)"
        )
    return int(math.floor(round(warmup * steps, 9)))


class ODMSampler(SkillSampler):
    """Online data mixing (Albalak et al., 2023; docs/methods/mixers.md#odm).

    Steps s ≤ W (the warm-up) use π_init (`warmup_mixture`: the natural mixture or uniform) and
    update nothing. After it, every `update_every`-th step updates the reward estimates R̂ from the
    step's per-skill mean training losses r_i (skills present in the batch only), by `variant`:

    - paper: π_s = (1 − K ε_s) softmax(ε_{s−1} R̂) + ε_s at every step s > W;
      R̂_i ← α R̂_i + (1 − α) r_i / π_s(i).
    - code_smoothed_mean: R̂_i ← α R̂_i + (1 − α) exp(r_i); π = (1 − K ε_s) R̂ / Σ R̂ + ε_s, used
      from step s + 1.
    - code_exp3: R̂_i ← R̂_i + (r_i / 10) / π(i); π = (1 − K ε_s) softmax(ε' R̂) + ε_s, used from
      step s + 1 (ε' the ε of the previous update, 1/K before the first).

    `steps` is train.steps (needed when `warmup` is a share of it). One skill: π = [1].
    """

    name = "odm"
    allocation = "multinomial"
    needs_batch_losses = True

    def __init__(
        self,
        skills: list[str],
        sizes: list[int],
        seed: int,
        update_steps: int = 100,
        *,
        variant: str = "paper",
        alpha: float = 0.9,
        warmup: float = 0.01,
        warmup_mixture: str = "random",
        update_every: int = 1,
        steps: int = 0,
    ) -> None:
        if variant not in VARIANTS:
            raise SkillmixInputError(f"odm.variant must be one of {list(VARIANTS)}, got {variant!r}")
        if warmup_mixture not in ("random", "stratified"):
            raise SkillmixInputError(
                f"odm.warmup_mixture must be random or stratified, got {warmup_mixture!r}"
            )
        if not 0 <= alpha < 1:
            raise SkillmixInputError(f"odm.alpha must be in [0, 1), got {alpha}")
        if update_every < 1:
            raise SkillmixInputError(f"odm.update_every must be >= 1, got {update_every}")
        k = len(skills)
        initial = np.asarray(sizes, dtype=np.float64) if warmup_mixture == "random" else np.ones(k)
        super().__init__(skills, sizes, initial, seed, update_steps)
        self.variant, self.alpha, self.update_every = variant, float(alpha), int(update_every)
        self.steps = int(steps)
        self.warmup = warmup_steps(warmup, self.steps) if k > 1 else 0
        if self.steps and self.warmup >= self.steps:
            raise SkillmixInputError(
                f"odm.warmup gives {self.warmup} warm-up steps of train.steps = {self.steps}: "
                "the bandit would never update"
            )
        if k == 1:
            log.info("odm: one training skill, the policy is [1] (no bandit)")
        self.initial = initial / initial.sum()
        self.estimates = np.zeros(k)
        self.policy_now = self.initial.copy()
        self.eps = 1.0 / k
        self.updates = 0

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """ODM on the run's skills and sizes; `settings` is the completed `odm` block; the run's
        budget is `inputs.steps` (train.steps)."""
        cfg = dict(settings)
        steps = int(inputs.steps)
        return cls(
            inputs.skills,
            inputs.sizes,
            inputs.seed,
            inputs.update_steps,
            steps=steps,
            **cfg,  # the completed `odm` block: every key is an ODMSampler option
        )

    def segment(self, step: int) -> tuple[int, int, int]:
        """Every step is a segment of its own (index step − 1)."""
        return step - 1, step, 1

    def policy(self, step: int) -> np.ndarray:
        """π_s, the mixture step `step` draws its batch from."""
        k = len(self.skills)
        if k == 1:
            return np.ones(1)
        if self.variant != "paper":
            return self.policy_now.copy()
        if step <= self.warmup:
            return self.initial.copy()
        return gibbs_policy(self.estimates, exploration_rate(step, k), exploration_rate(step - 1, k))

    def round_mixture(self, round_: int) -> np.ndarray:
        """The policy of step `round_` + 1 (segments are single steps)."""
        p = self.policy(round_ + 1)
        if log.isEnabledFor(logging.DEBUG):
            nonzero = p[p > 0] / p.sum()
            entropy = float(-(nonzero * np.log(nonzero)).sum())
            log.debug("odm step %d: max p %.4f, entropy %.4f", round_ + 1, p.max() / p.sum(), entropy)
        return p

    def rewards(self, stats: BatchStats) -> dict[int, float]:
        """r_i = Σ ℓ / label tokens of every skill present in the step's batch; non-finite is an
        error naming the skill and the step."""
        found = {}
        for i, (loss, tokens) in enumerate(zip(stats.loss_sum, stats.tokens, strict=True)):
            if tokens <= 0:
                continue
            r = float(loss) / float(tokens)
            if not math.isfinite(r):
                raise FloatingPointError(
                    f"odm: training loss of skill {self.skills[i]!r} is {r} at step {stats.step}"
                )
            found[i] = r
        return found

    def observe_batch(self, stats: BatchStats) -> None:
        """Update the reward estimates (and, for the code variants, the policy) after step s's
        forward pass, when s > W and s % update_every = 0."""
        s = int(stats.step)
        rewards = self.rewards(stats)
        if len(self.skills) == 1 or s <= self.warmup or s % self.update_every or not rewards:
            return
        if self.variant == "paper":
            self._update_paper(s, rewards)
        elif self.variant == "code_smoothed_mean":
            self._update_smoothed_mean(s, rewards)
        else:
            self._update_exp3(s, rewards)
        self.updates += 1

    def _update_paper(self, step: int, rewards: dict[int, float]) -> None:
        """R̂_i ← α R̂_i + (1 − α) r_i / π_s(i): an importance-weighted moving average."""
        pi = self.policy(step)
        for i, r in rewards.items():
            self.estimates[i] = self.alpha * self.estimates[i] + (1 - self.alpha) * r / pi[i]

    def _update_smoothed_mean(self, step: int, rewards: dict[int, float]) -> None:
        """The released `SmoothedMeanWeightUpdater.group_update`: a moving average of exp(r_i), the
        policy proportional to it above the floor ε_s."""
        k = len(self.skills)
        previous, self.eps = self.eps, exploration_rate(step, k)
        for i, r in rewards.items():
            self.estimates[i] = self.alpha * self.estimates[i] + (1 - self.alpha) * math.exp(r)
        scale = (1 - k * self.eps) / float(np.sum(self.estimates * previous))
        weights = self.estimates * previous * scale + self.eps
        self.policy_now = weights / weights.sum()

    def _update_exp3(self, step: int, rewards: dict[int, float]) -> None:
        """The released `Exp3WeightUpdater.group_update`: cumulative importance-weighted rewards / 10,
        a Gibbs policy at the previous update's ε above the floor ε_s."""
        k = len(self.skills)
        previous, self.eps = self.eps, exploration_rate(step, k)
        for i, r in rewards.items():
            self.estimates[i] += (r / 10) / self.policy_now[i]
        weights = gibbs_policy(self.estimates, self.eps, previous)
        self.policy_now = weights / weights.sum()

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the reward estimates, the policy, ε and the update count."""
        return {
            **super().state_dict(),
            "estimates": self.estimates.tolist(),
            "policy_now": self.policy_now.tolist(),
            "eps": self.eps,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by `state_dict`."""
        super().load_state_dict(state)
        self.estimates = np.asarray(state["estimates"], dtype=np.float64)
        self.policy_now = np.asarray(state["policy_now"], dtype=np.float64)
        self.eps = float(state["eps"])
        self.updates = int(state["updates"])
