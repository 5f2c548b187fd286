"""Training examples generated anew for every round (`train.data: fresh`), as Skill-It does.

A synthetic source (xor, lego, addition) can make as many examples as a run wants. In fresh
mode a round of a training run does not reuse the fixed pool of training slices: it gets
exactly the examples its plan asks for (``SkillSampler.plan_counts``), generated from the
source's own settings with the stream ``(run seed, round)``. The examples of a round are a
pure function of the source config, the run's seed, the round and the counts, so a resumed
run regenerates the same ones, and two seeds see different data. Validation and test stay the
fixed slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from skillmix.data.sources import generate_fresh
from skillmix.engine.encoding import EncodedSet, encode_frame

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FRESH_STREAM = 5_000_011  # tags the fresh-example streams apart from any other seeded stream


class FreshSets:
    """The encoded training sets of each round, generated on demand (one round cached)."""

    def __init__(
        self,
        source_cfg: dict[str, Any],
        skills: Sequence[str],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        seed: int,
        loss_on: str = "answer",
    ) -> None:
        self.source_cfg = dict(source_cfg)
        self.skills = list(skills)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.seed = int(seed)
        self.loss_on = loss_on
        self._cached: tuple[int, tuple[int, ...], list[EncodedSet]] | None = None

    def stream(self, round_: int) -> tuple[int, int, int]:
        """The generator stream of round `round_` (see :func:`skillmix.data.sources.generate_fresh`)."""
        return (FRESH_STREAM, self.seed, int(round_))

    def for_round(self, round_: int, counts: Sequence[int]) -> list[EncodedSet]:
        """`counts[i]` new examples of skill i for round `round_`, encoded, in skill order."""
        key = tuple(int(c) for c in counts)
        if len(key) != len(self.skills):
            raise ValueError(f"expected {len(self.skills)} counts, got {len(key)}")
        if self._cached is not None and self._cached[:2] == (round_, key):
            return self._cached[2]
        examples = generate_fresh(
            self.source_cfg, dict(zip(self.skills, key, strict=True)), self.stream(round_)
        ).examples
        by_skill = dict(tuple(examples.groupby("skill", sort=False)))
        empty = examples.iloc[:0]
        sets = [
            encode_frame(self.tokenizer, by_skill.get(skill, empty), skill, self.max_length, self.loss_on)
            for skill in self.skills
        ]
        self._cached = (round_, key, sets)
        return sets
