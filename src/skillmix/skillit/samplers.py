"""The Skill-It stage's samplers: Skill-It's online mixture, the curricula, and the strategy names.

Strategies differ only in the mixture of each round: `random`, `stratified`, `target_only`
(:mod:`skillmix.engine.sampling`), `skill_curriculum` (skills in order of initial loss, in stages) and
`skillit` (Skill-It's online update from the skills graph and the recent validation losses).
`curriculum` and `anticurriculum` order single examples by initial loss instead of mixing skills.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skillmix.engine.sampling import (
    RandomSampler,
    SkillSampler,
    StratifiedSampler,
    TargetOnlySampler,
    normalise,
)
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError

STRATEGIES = (
    "random",
    "stratified",
    "target_only",
    "skill_curriculum",
    "skillit",
    "curriculum",
    "anticurriculum",
)


class SkillCurriculumSampler(SkillSampler):
    """Skills in order of their initial mean loss, easiest first (Varshney et al., 2022).

    Round r < k trains skill order[r] with weight 1 − frac and spreads `frac` uniformly over
    the skills before it (round 0: skill order[0] alone); from round k on, the natural mixture.
    `reverse` orders hardest first.
    """

    name = "skill_curriculum"

    def __init__(
        self,
        skills: list[str],
        sizes: list[int],
        seed: int,
        initial_losses: list[float],
        frac: float = 0.0,
        reverse: bool = False,
        update_steps: int = 100,
    ) -> None:
        if not 0.0 <= frac < 1.0:
            raise SkillmixInputError(f"curriculum.frac must be in [0, 1), got {frac}")
        order = np.argsort(np.asarray(initial_losses), kind="stable")
        self.order = [int(i) for i in (order[::-1] if reverse else order)]
        self.frac = float(frac)
        self.natural = normalise(np.asarray(sizes, dtype=np.float64))
        super().__init__(skills, sizes, self.round_mixture(0), seed, update_steps)

    def round_mixture(self, round_: int) -> np.ndarray:
        """The stage's mixture: the new skill, `frac` of earlier ones; then the natural mixture."""
        if round_ >= len(self.order):
            return self.natural
        p = np.zeros(len(self.order))
        earlier = self.order[:round_]
        p[self.order[round_]] = 1.0 - (self.frac if earlier else 0.0)
        for i in earlier:
            p[i] += self.frac / len(earlier)
        return p


class SkillItSampler(SkillSampler):
    """Skill-It's online mixture (Chen et al. 2023, Alg. 1, in skillmix's normative form).

    p_1 ∝ prior ⊙ exp(η · A · 1_m); after round t, p_{t+1} ∝ prior ⊙ exp(η_t · A · agg(W_t)),
    where A is k_train × m (rows: training skills, columns: evaluation skills), W_t holds the
    last `window` loss vectors over the evaluation skills and agg sums (or averages) them.
    With `window_unit` "rounds" the window holds the evaluation before training and those at
    the end of every round; with "evaluations" it holds every evaluation the trainer made.
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
        if window_unit not in ("rounds", "evaluations"):
            raise SkillmixInputError(
                f"skillit.window_unit must be rounds or evaluations, got {window_unit!r}"
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

    def needs_eval(self, step: int) -> bool:
        """Evaluations at every round boundary feed the update."""
        return step % self.update_steps == 0

    def observe(self, step: int, losses: dict[str, float]) -> None:
        """Record the evaluation skills' losses; at a round's end, compute the next mixture."""
        missing = [s for s in self.eval_skills if s not in losses]
        if missing:
            raise ValueError(f"no validation loss for evaluation skills {missing}")
        vector = [float(losses[s]) for s in self.eval_skills]
        round_end = step > 0 and step % self.update_steps == 0
        if self.initial is None:
            self.initial = vector
        if step == 0 or round_end or self.window_unit == "evaluations":
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


class CurriculumSampler(SkillSampler):
    """Examples ordered once by the initial model's loss, easy → hard (or hard → easy).

    Round r (0-based) draws its update_steps × batch_size examples from the first
    (r + 1) · update_steps · batch_size of that order (linear pacing), without replacement
    while the pool is large enough.
    """

    name = "curriculum"
    supports_fresh = False

    def __init__(
        self,
        skills: list[str],
        sizes: list[int],
        seed: int,
        example_losses: list[list[float]],
        reverse: bool = False,
        update_steps: int = 100,
    ) -> None:
        if [len(x) for x in example_losses] != list(sizes):
            raise ValueError("example_losses must have one loss per training example")
        super().__init__(skills, sizes, np.asarray(sizes, dtype=np.float64), seed, update_steps)
        flat = [(loss, s, i) for s, losses in enumerate(example_losses) for i, loss in enumerate(losses)]
        flat.sort(key=lambda t: (-t[0] if reverse else t[0], t[1], t[2]))
        self.order = np.array([(s, i) for _, s, i in flat], dtype=np.int64)
        self.name = "anticurriculum" if reverse else "curriculum"

    def sample(self, step: int, batch_size: int) -> list[tuple[int, int]]:
        """The batch of `step`: a slice of its round's draw from the paced pool."""
        r = self.round_of(step)
        if self._plan is None or self._plan[0] != r:
            n = self.update_steps * batch_size
            pool = min(len(self.order), (r + 1) * n)
            rng = np.random.default_rng([self.seed, 11, r])
            picks = rng.choice(pool, size=n, replace=pool < n)
            self._plan = (r, picks)
            if not self.history or self.history[-1]["round"] < r:
                counts = np.bincount(self.order[picks, 0], minlength=len(self.skills))
                self.history.append({"round": r, "step": step, "weights": (counts / n).tolist()})
        offset = (step - 1 - r * self.update_steps) * batch_size
        return [(int(s), int(i)) for s, i in self.order[self._plan[1][offset : offset + batch_size]]]


def resolve_aggregate(
    skillit: dict[str, Any], skills: list[str], targets: list[str] | None
) -> dict[str, Any]:
    """The `skillit` block with `aggregate: auto` resolved: mean when fine-tuning (target skills
    given, all of them training skills), else sum."""
    if skillit["aggregate"] != "auto":
        return skillit
    fine_tuning = bool(targets) and set(targets or []) <= set(skills)
    return {**skillit, "aggregate": "mean" if fine_tuning else "sum"}


def make_sampler(
    strategy: str,
    skills: list[str],
    sizes: list[int],
    seed: int,
    update_steps: int = 100,
    *,
    graph: np.ndarray | None = None,
    eval_skills: list[str] | None = None,
    targets: list[str] | None = None,
    skillit: dict[str, Any] | None = None,
    curriculum: dict[str, Any] | None = None,
    example_losses: list[list[float]] | None = None,
) -> SkillSampler:
    """The sampler of a training strategy.

    `graph` and `eval_skills` (and the `skillit` settings) are needed by skillit; `targets` by
    target_only; the initial per-example losses by the curricula.
    """
    if strategy == "random":
        return RandomSampler(skills, sizes, seed, update_steps)
    if strategy == "stratified":
        return StratifiedSampler(skills, sizes, seed, update_steps)
    if strategy == "target_only":
        return TargetOnlySampler(skills, sizes, seed, list(targets or []), update_steps)
    if strategy in ("curriculum", "anticurriculum", "skill_curriculum"):
        if example_losses is None:
            raise ValueError(f"{strategy} needs the initial model's per-example losses")
        if strategy == "skill_curriculum":
            cfg = complete("curriculum", curriculum)
            means = [float(np.mean(x)) for x in example_losses]
            return SkillCurriculumSampler(
                skills, sizes, seed, means, cfg["frac"], cfg["reverse"], update_steps
            )
        return CurriculumSampler(
            skills, sizes, seed, example_losses, strategy == "anticurriculum", update_steps
        )
    if strategy == "skillit":
        if graph is None or eval_skills is None:
            raise ValueError("skillit needs a skills graph and the evaluation skills")
        cfg = resolve_aggregate(complete("skillit", skillit), skills, targets)
        return SkillItSampler(
            skills,
            sizes,
            seed,
            graph,
            eval_skills,
            update_steps=update_steps,
            **cfg,  # the completed `skillit` block: every key is a SkillItSampler option
        )
    raise SkillmixInputError(
        f"train.strategies: unknown strategy {strategy!r}; expected one of {list(STRATEGIES)}"
    )
