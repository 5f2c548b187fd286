"""DoReMi (Xie et al., "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining",
NeurIPS 2023; docs/methods/mixers.md#doremi).

A proxy model trained with Group DRO against a reference model learns domain weights α_t from each
step's clipped excess loss; the main run (the `doremi` strategy) trains on their average ᾱ, a fixed
mixture read by skill name from the proxy job's `weights.json`. The proxy's sampler is
:class:`DoReMiProxySampler` (a job of its own, :mod:`skillmix.mixing.doremi_proxy`, not a strategy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from skillmix.engine.sampling import BatchStats, MixingInputs, SkillSampler
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.baselines import GivenMixtureSampler

REGISTER = [
    {
        "name": "doremi",
        "worker": "DoReMiSampler",
        "summary": "DoReMi's averaged domain weights from a Group DRO proxy run (a fixed mixture)",
        "settings": "doremi",
        "needs": ["mixture_file"],
    },
]
"""This module's strategy in the registry (skillmix.infra.registry)."""

CHOICES = {
    "proxy_sampling": ("stratified", "random"),
    "loss": ("domain", "token"),
    "average": ("updates", "with_initial"),
}
"""The allowed values of the `doremi` block's enumerated keys."""


def check_settings(eta: float, smoothing: float, **choices: str) -> None:
    """Refuse `doremi` settings out of range, naming the key (the schema's ranges, for direct use)."""
    if not (math.isfinite(eta) and eta > 0):
        raise SkillmixInputError(f"doremi.eta must be a finite number > 0, got {eta}")
    if not 0 <= smoothing < 1:
        raise SkillmixInputError(f"doremi.smoothing must be in [0, 1), got {smoothing}")
    for key, value in choices.items():
        if value not in CHOICES[key]:
            raise SkillmixInputError(f"doremi.{key} must be one of {list(CHOICES[key])}, got {value!r}")


def entropy(p: np.ndarray) -> float:
    """The entropy −Σ p_i ln p_i of a mixture (0 ln 0 = 0), in nats."""
    p = np.asarray(p, dtype=np.float64)
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def _logsumexp(z: np.ndarray) -> float:
    top = float(z.max())
    return top + math.log(float(np.exp(z - top).sum()))


class DoReMiProxySampler(SkillSampler):
    """The proxy run's sampler: batches from a fixed sampling mixture s, domain weights by Group DRO.

    Xie et al. (2023), Algorithm 1, in skillmix's form (docs/methods/mixers.md#doremi): s is
    uniform (`proxy_sampling: stratified`) or the natural mixture (`random`), floor allocation;
    α_0 = u. After the forward passes of step t the sampler gets the step's per-skill clipped excess
    Σ_{x∈T_j} max(ℓ_x − ℓ^ref_x, 0) and label-token counts |T_j|, and sets

        λ_t[j] = excess_j / |T_j| for every skill j in the batch (an absent skill keeps its score;
                 before any observation it is ln V, V the tokenizer's vocabulary size),
        α_t = (1 − c) · softmax(log α_{t−1} + η λ_t) + c · u.

    The step's loss weights are α_t (`loss: domain`) or, for `loss: token` (the released code),
    α'_j = w_j |T_j| / Σ_i w_i |T_i| with w_j ∝ α_t[j] / s_j, so that the engine's weighted loss is
    the code's weighted token mean. ᾱ (:meth:`average_weights`) is the mean of α_1..α_T
    (`average: updates`, the paper) or of α_0..α_T (`with_initial`, the code).
    """

    name = "doremi_proxy"
    needs_batch_losses = True
    needs_reference = True

    def __init__(
        self,
        skills: list[str],
        sizes: list[int],
        seed: int,
        vocab_size: int,
        *,
        eta: float = 1.0,
        smoothing: float = 1e-3,
        proxy_sampling: str = "stratified",
        loss: str = "domain",
        average: str = "updates",
        update_steps: int = 100,
    ) -> None:
        check_settings(
            float(eta), float(smoothing), proxy_sampling=proxy_sampling, loss=loss, average=average
        )
        if int(vocab_size) < 2:
            raise SkillmixInputError(f"DoReMi needs the tokenizer's vocabulary size (>= 2), got {vocab_size}")
        sampling = np.ones(len(skills)) if proxy_sampling == "stratified" else np.asarray(sizes, dtype=float)
        super().__init__(skills, sizes, sampling, seed, update_steps)
        self.sampling = self.p.copy()
        self.eta, self.smoothing = float(eta), float(smoothing)
        self.loss, self.average = loss, average
        self.initial_score = math.log(int(vocab_size))
        k = len(skills)
        self.log_alpha = np.full(k, -math.log(k))
        self.scores = np.full(k, self.initial_score)
        self.steps: list[int] = []
        self.alphas: list[list[float]] = []
        self.lambdas: list[list[float]] = []
        self._current: tuple[int, np.ndarray] | None = None

    @classmethod
    def from_inputs(
        cls, inputs: MixingInputs, settings: Mapping[str, Any], vocab_size: int | None = None
    ) -> DoReMiProxySampler:
        """The proxy's sampler of a run: its skills and sizes, the completed `doremi` block, and
        the tokenizer's vocabulary size V (the initial score is ln V)."""
        if vocab_size is None:
            raise ValueError("the DoReMi proxy sampler needs the tokenizer's vocabulary size")
        keys = ("eta", "smoothing", "proxy_sampling", "loss", "average")
        return cls(
            inputs.skills,
            inputs.sizes,
            inputs.seed,
            vocab_size,
            update_steps=inputs.update_steps,
            **{k: settings[k] for k in keys},
        )

    def alpha(self) -> np.ndarray:
        """The current domain weights α_t (α_0 = uniform before the first step)."""
        return np.exp(self.log_alpha)

    def observe_batch(self, stats: BatchStats) -> None:
        """Score the step's skills by their clipped excess loss and update α (see the class doc)."""
        if stats.excess_loss_sum is None or stats.reference_loss_sum is None:
            raise ValueError("the DoReMi proxy needs the reference model's losses on every batch")
        if self.steps and stats.step <= self.steps[-1]:
            raise ValueError(f"DoReMi proxy: step {stats.step} observed after step {self.steps[-1]}")
        tokens = np.asarray(stats.tokens, dtype=np.float64)
        present = tokens > 0
        self._check_finite(stats, present)
        scores = self.scores.copy()
        scores[present] = np.asarray(stats.excess_loss_sum, dtype=np.float64)[present] / tokens[present]
        with np.errstate(over="ignore", invalid="ignore"):
            z = self.log_alpha + self.eta * scores
        if not np.all(np.isfinite(z)):
            bad = self.skills[int(np.flatnonzero(~np.isfinite(z))[0])]
            raise FloatingPointError(
                f"DoReMi proxy: the weight update of skill {bad!r} at step {stats.step} is not finite"
            )
        z = z - _logsumexp(z)
        k = len(self.skills)
        if self.smoothing > 0:
            z = np.logaddexp(math.log1p(-self.smoothing) + z, math.log(self.smoothing / k))
        self.log_alpha, self.scores = z, scores
        self.steps.append(int(stats.step))
        self.alphas.append(np.exp(z).tolist())
        self.lambdas.append(scores.tolist())
        self._current = (int(stats.step), tokens)

    def _check_finite(self, stats: BatchStats, present: np.ndarray) -> None:
        """Raise naming the skill and step of a non-finite statistic (a diverged proxy or reference)."""
        for what, values in (
            ("the proxy's training loss", stats.loss_sum),
            ("the reference model's loss", stats.reference_loss_sum),
            ("the clipped excess loss", stats.excess_loss_sum),
        ):
            bad = present & ~np.isfinite(np.asarray(values, dtype=np.float64))
            if bad.any():
                skill = self.skills[int(np.flatnonzero(bad)[0])]
                raise FloatingPointError(
                    f"DoReMi proxy: {what} of skill {skill!r} at step {stats.step} is not finite "
                    f"({np.asarray(values)[bad][0]}); the run diverged"
                )

    def loss_weights(self, step: int) -> np.ndarray:
        """The step's per-skill loss weights: α_t (domain) or the token form's α' (class doc)."""
        if self._current is None or self._current[0] != step:
            raise RuntimeError(f"DoReMi proxy: loss weights of step {step} asked before its statistics")
        alpha = self.alpha()
        if self.loss == "domain":
            return alpha
        tokens = self._current[1]
        mass = alpha / self.sampling * tokens  # w_j |T_j| (w's normalisation cancels)
        total = mass.sum()
        return mass / total if total > 0 else np.zeros_like(mass)

    def average_weights(self) -> np.ndarray:
        """ᾱ: the mean of α_1..α_T (`updates`), or of α_0..α_T with α_0 = u (`with_initial`)."""
        if not self.alphas:
            raise ValueError("DoReMi proxy: no weight update yet, so no average")
        total = np.sum(self.alphas, axis=0)
        if self.average == "with_initial":
            k = len(self.skills)
            return (total + np.full(k, 1 / k)) / (len(self.alphas) + 1)
        return total / len(self.alphas)

    def trajectory_rows(self) -> list[dict[str, Any]]:
        """Every update so far: rows of step, skill, weight α_t and score λ_t."""
        return [
            {"step": step, "skill": skill, "weight": w, "score": lam}
            for step, alpha, scores in zip(self.steps, self.alphas, self.lambdas, strict=True)
            for skill, w, lam in zip(self.skills, alpha, scores, strict=True)
        ]

    def step_summary(self) -> list[dict[str, Any]]:
        """Per update: step, max_weight (max_j α_t[j]) and weight_entropy (the entropy of α_t)."""
        return [
            {"step": step, "max_weight": max(alpha), "weight_entropy": entropy(np.asarray(alpha))}
            for step, alpha in zip(self.steps, self.alphas, strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the weights, scores and the trajectory so far."""
        return {
            **super().state_dict(),
            "log_alpha": self.log_alpha.tolist(),
            "scores": self.scores.tolist(),
            "steps": list(self.steps),
            "alphas": [list(a) for a in self.alphas],
            "lambdas": [list(v) for v in self.lambdas],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by `state_dict`."""
        super().load_state_dict(state)
        self.log_alpha = np.asarray(state["log_alpha"], dtype=np.float64)
        self.scores = np.asarray(state["scores"], dtype=np.float64)
        self.steps = [int(s) for s in state["steps"]]
        self.alphas = [list(a) for a in state["alphas"]]
        self.lambdas = [list(v) for v in state["lambdas"]]
        self._current = None


def doremi_cost(train_steps: int, batch_size: int, proxy_steps: int | None) -> dict[str, int]:
    """DoReMi's training outside the main run: the reference (train.steps steps, reused from its
    baseline run but still listed) and the proxy (`proxy_steps`, null = train.steps); the proxy
    runs no evaluations (the reference's are reported with its own run)."""
    steps = int(train_steps) + int(proxy_steps or train_steps)
    return {
        "extra_runs": 2,
        "extra_steps": steps,
        "extra_examples": steps * int(batch_size),
        "extra_evaluations": 0,
    }


class DoReMiSampler(GivenMixtureSampler):
    """The `doremi` strategy: the main run trains on DoReMi's averaged weights ᾱ, a fixed mixture
    read by skill name from the proxy job's file (Xie et al. 2023, §2; docs/methods/mixers.md#doremi)."""

    name = "doremi"

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """The run's skills on `inputs.mixture` (ᾱ from `results/doremi/weights.json`); `settings`
        is the completed `doremi` block (its proxy_steps enter the cost)."""
        if inputs.mixture is None:
            raise SkillmixInputError(
                "train.strategies doremi: needs the DoReMi proxy's weights (results/doremi/weights.json)"
            )
        steps = int(inputs.steps or 0)  # 0: the run did not say its budget
        batch = int(inputs.batch_size)
        extra = doremi_cost(steps, batch, settings.get("proxy_steps")) if steps else None
        return cls(inputs.skills, inputs.sizes, inputs.seed, inputs.mixture, inputs.update_steps, extra)

    def cost(self) -> dict[str, int]:
        """The reference and proxy runs (2 runs, their steps and examples; see :func:`doremi_cost`);
        only the runs when the budget is unknown, and examples only with the batch size."""
        if self.extra is None:
            return {**super().cost(), "extra_runs": 2}
        return dict(self.extra)
