"""A training job assembled from config blocks and slice files: the model, the encoded data, the sampler.

Shared by the stages that train (Skill-It's strategies, the graph runs): :class:`TrainingRun`
holds everything one job needs; :func:`load_run_data` loads the model and encodes the slices
(:class:`RunData`), which becomes the job once its sampler is chosen.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skillmix.data.slicing import read_slices
from skillmix.data.sources import SYNTHETIC_KINDS
from skillmix.engine.encoding import EncodedSet, encode_frame
from skillmix.engine.fresh import FreshSets
from skillmix.engine.modeling import Runtime, load_model, select_runtime
from skillmix.engine.sampling import SkillSampler
from skillmix.engine.training import TrainResult, TrainSettings, fingerprint, train
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_sets(
    tokenizer: PreTrainedTokenizerBase,
    skills: Sequence[str],
    paths: Sequence[str | os.PathLike],
    max_length: int,
    limit: int | None = None,
    loss_on: str = "answer",
    eos_label: bool = True,
) -> list[EncodedSet]:
    """Encode one split's slice files, in the order of `skills` (the manifest's order).

    `limit` keeps the first rows of each slice (evaluation caps); `loss_on` and `eos_label` choose
    the label tokens (see :func:`skillmix.engine.encoding.encode_row`).
    """
    frames = read_slices(paths, skills, "encoded sets")
    return [
        encode_frame(
            tokenizer,
            frames[s] if limit is None else frames[s].head(limit),
            s,
            max_length,
            loss_on,
            eos_label,
        )
        for s in skills
    ]


@dataclass
class TrainingRun:
    """Everything one training job needs, ready to train."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    runtime: Runtime
    train_sets: list[EncodedSet] | FreshSets
    val_sets: list[EncodedSet]
    sampler: SkillSampler
    settings: TrainSettings
    eval_batch_size: int
    fingerprint: str
    reference: PreTrainedModel | None = None
    """The reference model of a sampler that `needs_reference` (its losses on every batch)."""

    def train(
        self, resume_dir: str | os.PathLike | None = None, stop_after: int | None = None
    ) -> TrainResult:
        """Train (resuming from a matching resume state in `resume_dir`)."""
        return train(
            self.model,
            self.tokenizer,
            self.train_sets,
            self.sampler,
            self.settings,
            self.runtime,
            val_sets=self.val_sets,
            eval_batch_size=self.eval_batch_size,
            resume_dir=resume_dir,
            fingerprint_=self.fingerprint,
            stop_after=stop_after,
            reference=self.reference,
        )


def fresh_training_sets(
    data: str,
    key: str,
    source_cfg: dict[str, Any] | None,
    skills: list[str],
    tokenizer: PreTrainedTokenizerBase,
    model_cfg: dict[str, Any],
    seed: int,
    loss_on: str = "answer",
) -> FreshSets | None:
    """The fresh-example sets of a run whose `key` (e.g. `train.data`) is `fresh`; None for `pool`."""
    model_cfg = complete("model", model_cfg)
    if data == "pool":
        return None
    if data != "fresh":
        raise SkillmixInputError(f"config {key}: expected pool or fresh, got {data!r}")
    kind = (source_cfg or {}).get("kind")
    if kind not in SYNTHETIC_KINDS:
        raise SkillmixInputError(
            f"config {key}: fresh needs a synthetic source (source.kind one of {list(SYNTHETIC_KINDS)}) "
            f"that can generate new examples; source.kind is {kind!r}: use {key}: pool"
        )
    return FreshSets(source_cfg, skills, tokenizer, model_cfg["max_length"], seed, loss_on)


def run_sets(
    pool: list[EncodedSet], fresh: FreshSets | None, sampler: SkillSampler
) -> list[EncodedSet] | FreshSets:
    """The sets a run trains on: `fresh` when given and the sampler can index them (the sampler
    is then put in fresh mode), else the pool (e.g. for curricula, which order the pool)."""
    if fresh is None or not sampler.supports_fresh:
        return pool
    sampler.use_fresh()
    return fresh


@dataclass
class RunData:
    """A run's model, runtime and encoded slices, before its sampler is chosen."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    runtime: Runtime
    train_sets: list[EncodedSet]
    val_sets: list[EncodedSet]
    data_paths: list[str | os.PathLike]
    """The slice files read (their bytes are part of the run's identity)."""

    def training_run(
        self,
        sampler: SkillSampler,
        settings: TrainSettings,
        fresh: FreshSets | None,
        eval_batch_size: int,
        identity: Sequence[Any],
        source_cfg: dict[str, Any] | None,
    ) -> TrainingRun:
        """The job: trains on the fresh sets when given and the sampler can index them (else on the
        slices); its fingerprint hashes `identity`, the slice files and, for fresh sets, the source."""
        sets = run_sets(self.train_sets, fresh, sampler)
        digest = fingerprint(
            *identity,
            [file_digest(p) for p in self.data_paths],
            None if sets is self.train_sets else source_cfg,
        )
        return TrainingRun(
            self.model,
            self.tokenizer,
            self.runtime,
            sets,
            self.val_sets,
            sampler,
            settings,
            eval_batch_size,
            digest,
        )


def load_run_data(
    model_cfg: dict[str, Any],
    train_skills: list[str],
    val_skills: list[str],
    train_paths: Sequence[str | os.PathLike],
    val_paths: Sequence[str | os.PathLike],
    val_limit: int | None,
    loss_on: str = "answer",
    val_eos: bool = False,
) -> RunData:
    """The model, its runtime, and the encoded training and validation sets of a run.

    Training labels follow `loss_on` (with end-of-sequence); validation labels are the answer
    tokens, with end-of-sequence when `val_eos`.
    """
    model_cfg = complete("model", model_cfg)
    model, tokenizer = load_model(model_cfg)
    runtime = select_runtime(model_cfg["device"], model_cfg["precision"])
    max_length = model_cfg["max_length"]
    train_sets = load_sets(tokenizer, train_skills, train_paths, max_length, loss_on=loss_on)
    val_sets = load_sets(tokenizer, val_skills, val_paths, max_length, val_limit, eos_label=val_eos)
    return RunData(model, tokenizer, runtime, train_sets, val_sets, [*train_paths, *val_paths])
