"""Skill-It's online mixture (Chen et al., "Skill-it! A data-driven skills framework for
understanding and training language models", NeurIPS 2023; docs/methods/skillit.md#online-mixture).

Every round, the mixture over training skills is p ∝ prior ⊙ exp(η · A · agg(recent validation
losses of the evaluation skills)), with A the skills graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skillmix.engine.sampling import MixingInputs, SkillSampler, normalise
from skillmix.infra.errors import SkillmixInputError

WINDOW_UNITS = ("rounds", "evaluations", "original")
"""What `skillit.window` counts (see :class:`SkillItSampler`)."""

REGISTER = [
    {
        "name": "skillit",
        "worker": "SkillItSampler",
        "summary": "Skill-It's online mixture from the skills graph and the validation losses",
        "settings": "skillit",
        "needs": ["graph", "val_losses"],
    },
]
"""This module's strategy in the registry (skillmix.infra.registry)."""


def resolve_aggregate(
    skillit: dict[str, Any], skills: list[str], targets: list[str] | None
) -> dict[str, Any]:
    """The `skillit` block with `aggregate: auto` resolved: mean when fine-tuning (target skills
    given, all of them training skills), else sum."""
    if skillit["aggregate"] != "auto":
        return skillit
    fine_tuning = bool(targets) and set(targets or []) <= set(skills)
    return {**skillit, "aggregate": "mean" if fine_tuning else "sum"}


class SkillItSampler(SkillSampler):
    """Skill-It's online mixture (Chen et al. 2023, Alg. 1, in skillmix's normative form).

    p_1 ∝ prior ⊙ exp(η · A · 1_m); after round t, p_{t+1} ∝ prior ⊙ exp(η_t · A · agg(W_t)),
    where A is k_train × m (rows: training skills, columns: evaluation skills), W_t holds the
    last `window` loss vectors over the evaluation skills and agg sums (or averages) them.
    With `window_unit` "rounds" the window holds the evaluation before training and those at
    the end of every round; with "evaluations" it holds every evaluation the trainer made (so
    the update after a round reads the last ones up to and including the round's end); with
    "original" it holds only the evaluations after steps 1, 1 + c, 1 + 2c, … (c =
    `eval_every`, train.eval_every), the original code's cadence, which it asks the trainer for:
    the update after a round reads evaluations made inside it, the latest after step end − c + 1.
    Options: `normalize_loss` divides losses by the initial ones element-wise;
    `eta_schedule` "loss_ratio" uses η_t = η / (ΣL_latest / ΣL_initial).
    """

    name = "skillit"

    def __init__(
        self,
        skills: list[str],
        sizes: list[int],
        seed: int,
        graph: np.ndarray,
        eval_skills: list[str],
        eta: float,
        window: int = 3,
        aggregate: str = "sum",
        prior: list[float] | None = None,
        window_unit: str = "rounds",
        normalize_loss: bool = False,
        eta_schedule: str = "constant",
        update_steps: int = 100,
        eval_every: int = 0,
    ) -> None:
        graph = np.asarray(graph, dtype=np.float64)
        if graph.shape != (len(skills), len(eval_skills)):
            raise SkillmixInputError(
                f"skills graph has shape {graph.shape}; expected {(len(skills), len(eval_skills))} "
                "(training skills × evaluation skills)"
            )
        if not np.all(np.isfinite(graph)):
            raise SkillmixInputError("skills graph has non-finite entries")
        if aggregate not in ("sum", "mean"):
            raise SkillmixInputError(f"skillit.aggregate must be sum or mean, got {aggregate!r}")
        if window_unit not in WINDOW_UNITS:
            raise SkillmixInputError(
                f"skillit.window_unit must be one of {', '.join(WINDOW_UNITS)}, got {window_unit!r}"
            )
        if window_unit == "original" and eval_every < 1:
            raise SkillmixInputError(
                "skillit.window_unit original evaluates after steps 1, 1 + c, 1 + 2c, … with "
                f"c = train.eval_every; got eval_every {eval_every}"
            )
        if eta_schedule not in ("constant", "loss_ratio"):
            raise SkillmixInputError(
                f"skillit.eta_schedule must be constant or loss_ratio, got {eta_schedule!r}"
            )
        if window < 1:
            raise SkillmixInputError(f"skillit.window must be >= 1, got {window}")
        self.graph = graph
        self.eval_skills = list(eval_skills)
        self.eta = float(eta)
        self.window = int(window)
        self.aggregate = aggregate
        self.window_unit = window_unit
        self.eval_every = int(eval_every)
        self.normalize_loss = bool(normalize_loss)
        self.eta_schedule = eta_schedule
        self.prior = normalise(np.ones(len(skills)) if prior is None else np.asarray(prior, dtype=np.float64))
        if len(self.prior) != len(skills):
            raise SkillmixInputError(f"skillit.prior needs {len(skills)} weights, got {len(self.prior)}")
        self.losses: list[list[float]] = []
        self.initial: list[float] | None = None
        logits = self.eta * graph @ np.ones(len(eval_skills))
        # shifted by the largest logit (the mixture is normalised): large graph rows cannot overflow
        initial_mixture = self.prior * np.exp(logits - logits.max())
        super().__init__(skills, sizes, initial_mixture, seed, update_steps)

    @classmethod
    def from_inputs(cls, inputs: MixingInputs, settings: dict[str, Any]) -> SkillSampler:
        """Skill-It on the run's graph (training × evaluation skills); `settings` is the completed
        `skillit` block (`aggregate: auto` resolved here)."""
        if inputs.graph is None:
            raise ValueError("skillit needs a skills graph and the evaluation skills")
        cfg = resolve_aggregate(settings, inputs.skills, inputs.targets)
        return cls(
            inputs.skills,
            inputs.sizes,
            inputs.seed,
            inputs.graph,
            inputs.eval_skills,
            update_steps=inputs.update_steps,
            eval_every=inputs.eval_every,
            **cfg,  # the completed `skillit` block: every key is a SkillItSampler option
        )

    def needs_eval(self, step: int) -> bool:
        """Evaluations at every round boundary feed the update; with `window_unit` original, also
        those after steps 1, 1 + c, 1 + 2c, … (c = `eval_every`)."""
        return step % self.update_steps == 0 or self._original_slot(step)

    def _original_slot(self, step: int) -> bool:
        """Whether the original code evaluates after 1-based step `step` (window_unit original)."""
        return self.window_unit == "original" and step >= 1 and (step - 1) % self.eval_every == 0

    def observe(self, step: int, losses: dict[str, float]) -> None:
        """Record the evaluation skills' losses; at a round's end, compute the next mixture."""
        missing = [s for s in self.eval_skills if s not in losses]
        if missing:
            raise ValueError(f"no validation loss for evaluation skills {missing}")
        vector = [float(losses[s]) for s in self.eval_skills]
        round_end = step > 0 and step % self.update_steps == 0
        if self.initial is None:
            self.initial = vector
        if self.window_unit == "original":
            if self._original_slot(step):
                self.losses.append(vector)
        elif step == 0 or round_end or self.window_unit == "evaluations":
            self.losses.append(vector)
        if round_end:
            self.p = self.next_mixture()

    def next_mixture(self) -> np.ndarray:
        """p ∝ prior ⊙ exp(η_t · A · agg(last `window` loss vectors))."""
        window = np.asarray(self.losses[-self.window :], dtype=np.float64)
        initial = np.asarray(self.initial, dtype=np.float64)
        if self.normalize_loss:
            window = window / initial
        agg = window.sum(0) if self.aggregate == "sum" else window.mean(0)
        eta = self.eta
        if self.eta_schedule == "loss_ratio":
            eta = self.eta / (np.sum(self.losses[-1]) / np.sum(initial))
        logits = eta * self.graph @ agg
        return normalise(self.prior * np.exp(logits - logits.max()))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, the loss window included."""
        initial = None if self.initial is None else list(self.initial)
        return {**super().state_dict(), "losses": [list(v) for v in self.losses], "initial": initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by `state_dict`."""
        super().load_state_dict(state)
        self.losses = [list(v) for v in state["losses"]]
        self.initial = state["initial"]
