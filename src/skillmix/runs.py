"""A training run assembled from config blocks and slice files: model, encoded data, sampler."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skillmix.encoding import EncodedSet, encode_frame
from skillmix.errors import SkillmixInputError
from skillmix.evaluation import evaluate_skills
from skillmix.jobs import write_parquet
from skillmix.modeling import Runtime, load_model, load_saved, select_runtime
from skillmix.plotting import plot_skill_curves
from skillmix.sampling import SkillSampler, make_sampler
from skillmix.training import TrainResult, TrainSettings, fingerprint, train


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_sets(
    tokenizer: PreTrainedTokenizerBase,
    skills: Sequence[str],
    paths: Sequence[str | os.PathLike],
    max_length: int,
    limit: int | None = None,
) -> list[EncodedSet]:
    """Encode one split's slice files, in the order of `skills` (the manifest's order).

    `limit` keeps the first rows of each slice (evaluation caps).
    """
    frames: dict[str, pd.DataFrame] = {}
    for path in paths:
        frame = pd.read_parquet(path)
        if frame.empty:
            raise SkillmixInputError(f"{path}: slice file has no rows")
        frames[str(frame["skill"].iloc[0])] = frame
    missing = [s for s in skills if s not in frames]
    if missing:
        raise SkillmixInputError(f"no slice file given for skills {missing}")
    return [
        encode_frame(tokenizer, frames[s] if limit is None else frames[s].head(limit), s, max_length)
        for s in skills
    ]


@dataclass
class TrainingRun:
    """Everything one training job needs, ready to train."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    runtime: Runtime
    train_sets: list[EncodedSet]
    val_sets: list[EncodedSet]
    sampler: SkillSampler
    settings: TrainSettings
    eval_batch_size: int
    fingerprint: str

    def train(
        self, checkpoint_dir: str | os.PathLike | None = None, stop_after: int | None = None
    ) -> TrainResult:
        """Train (resuming from a matching checkpoint in `checkpoint_dir`)."""
        return train(
            self.model,
            self.tokenizer,
            self.train_sets,
            self.sampler,
            self.settings,
            self.runtime,
            val_sets=self.val_sets,
            eval_batch_size=self.eval_batch_size,
            checkpoint_dir=checkpoint_dir,
            fingerprint_=self.fingerprint,
            stop_after=stop_after,
        )


def prepare_run(
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    strategy: str,
    manifest_path: str | os.PathLike,
    train_paths: Sequence[str | os.PathLike],
    val_paths: Sequence[str | os.PathLike],
) -> TrainingRun:
    """Load the model, encode the slices and build the sampler of one strategy."""
    manifest = json.loads(Path(manifest_path).read_text())
    skills = [s["name"] for s in manifest["skills"]]
    model, tokenizer = load_model(model_cfg)
    runtime = select_runtime(model_cfg.get("device", "auto"), model_cfg.get("precision", "auto"))
    max_length = model_cfg.get("max_length", 128)
    train_sets = load_sets(tokenizer, skills, train_paths, max_length)
    val_sets = load_sets(tokenizer, skills, val_paths, max_length, eval_cfg.get("max_examples_per_skill"))
    settings = TrainSettings.from_config(train_cfg)
    sampler = make_sampler(strategy, skills, [len(s) for s in train_sets], settings.seed)
    digest = fingerprint(
        model_cfg,
        train_cfg,
        eval_cfg,
        strategy,
        [file_digest(p) for p in [*train_paths, *val_paths]],
    )
    return TrainingRun(
        model,
        tokenizer,
        runtime,
        train_sets,
        val_sets,
        sampler,
        settings,
        eval_cfg.get("batch_size", 64),
        digest,
    )


METRICS_COLUMNS = ["run", "split", "step", "skill", "loss", "accuracy", "n"]


def evaluate_run(
    run: str,
    model_dir: str | os.PathLike,
    model_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    manifest_path: str | os.PathLike,
    test_paths: Sequence[str | os.PathLike],
    val_curve_path: str | os.PathLike,
    steps_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    plot_path: str | os.PathLike,
) -> pd.DataFrame:
    """Test-split metrics of a trained model joined to its validation curve; table and plot.

    The metrics table has one row per (split, step, skill): the validation rows come from
    training, the test rows are measured here at the final step.
    """
    manifest = json.loads(Path(manifest_path).read_text())
    skills = [s["name"] for s in manifest["skills"]]
    model, tokenizer = load_saved(model_dir)
    runtime = select_runtime(model_cfg.get("device", "auto"), model_cfg.get("precision", "auto"))
    model.to(runtime.device)
    test_sets = load_sets(
        tokenizer,
        skills,
        test_paths,
        model_cfg.get("max_length", 128),
        eval_cfg.get("max_examples_per_skill"),
    )
    test = evaluate_skills(model, tokenizer, test_sets, runtime, eval_cfg.get("batch_size", 64))
    final_step = int(pd.read_parquet(steps_path)["step"].max())
    test.insert(0, "step", final_step)
    test.insert(0, "split", "test")
    val = pd.read_parquet(val_curve_path)
    val.insert(0, "split", "val")
    metrics = pd.concat([val, test], ignore_index=True)
    metrics.insert(0, "run", run)
    metrics = metrics[METRICS_COLUMNS]
    write_parquet(metrics, metrics_path)
    plot_skill_curves(
        val,
        plot_path,
        f"{run}: validation curves (test accuracy {test['accuracy'].mean():.3f}, "
        f"test loss {test['loss'].mean():.3f} at step {final_step})",
    )
    return metrics
