"""Helpers of test_batch_losses: toy sets, a sampler that records what the engine hands it and
returns chosen loss weights, the statistics computed directly, and a job for several processes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from skillmix.engine.encoding import EncodedSet, collate, encode_frame, label_token_losses
from skillmix.engine.modeling import build_tiny_model, select_runtime
from skillmix.engine.sampling import BatchStats
from skillmix.engine.tokenizers import byte_tokenizer
from skillmix.engine.training import TrainSettings, train
from skillmix.infra import processes
from skillmix.mixing.baselines import StratifiedSampler

CPU = select_runtime("cpu", "fp32")
TINY = {
    "architecture": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "max_positions": 64,
}
SKILLS = ["copy", "shift"]

Weights = np.ndarray | Callable[[BatchStats], np.ndarray] | None


def toy_sets():
    """A byte tokenizer and two skills of 64 examples whose answers have one to three tokens."""
    tok = byte_tokenizer()
    rng = np.random.default_rng(0)
    sets = []
    for k, skill in enumerate(SKILLS):
        rows = []
        for i in range(64):
            a = int(rng.integers(0, 10))
            prompt = f"In {a} {skill}. Out:"
            answer = str((a + 3 * k) % 10) * (1 + i % 3)
            rows.append(
                {"id": f"{skill}-{i}", "skill": skill, "prompt": prompt, "answer": answer, "text": ""}
            )
        sets.append(encode_frame(tok, pd.DataFrame(rows), skill, 48))
    return tok, sets


class RecordingSampler(StratifiedSampler):
    """Uniform over skills; records every batch and every BatchStats, returns `weights` (an array,
    a function of the step's stats, or None) as the step's loss weights."""

    name = "recording"
    needs_batch_losses = True

    def __init__(self, sizes: list[int], weights: Weights = None, reference: bool = False) -> None:
        super().__init__(SKILLS, sizes, seed=0)
        self.weights = weights
        self.needs_reference = reference
        self.batches: list[list[tuple[int, int]]] = []
        self.seen: list[BatchStats] = []

    def sample(self, step: int, batch_size: int) -> list[tuple[int, int]]:
        pairs = super().sample(step, batch_size)
        self.batches.append(pairs)
        return pairs

    def observe_batch(self, stats: BatchStats) -> None:
        self.seen.append(stats)

    def loss_weights(self, step: int) -> np.ndarray | None:
        assert self.seen[-1].step == step  # weights come after the step's statistics
        return self.weights(self.seen[-1]) if callable(self.weights) else self.weights


def example_losses(
    model: torch.nn.Module, sets: list[EncodedSet], pairs: list[tuple[int, int]], pad: int
) -> list[float]:
    """Each example's summed label-token loss, one example per forward pass, without gradients."""
    out = []
    with torch.no_grad():
        for s, i in pairs:
            batch = collate([sets[s].input_ids[i]], [sets[s].labels[i]], pad)
            losses, _ = label_token_losses(model, batch)
            out.append(float(losses.sum()))
    return out


def direct_stats(
    model: torch.nn.Module, sets: list[EncodedSet], pairs: list[tuple[int, int]], pad: int
) -> dict[str, np.ndarray]:
    """Per skill: summed label-token losses, label tokens and examples of `pairs`, computed directly."""
    out = {k: np.zeros(len(sets)) for k in ("loss_sum", "tokens", "examples")}
    for (s, i), loss in zip(pairs, example_losses(model, sets, pairs, pad), strict=True):
        out["loss_sum"][s] += loss
        out["tokens"][s] += sets[s].label_counts[i]
        out["examples"][s] += 1
    return out


def stats_rows(seen: list[BatchStats]) -> list[dict[str, Any]]:
    """BatchStats as JSON rows."""
    return [
        {
            "step": st.step,
            "loss_sum": st.loss_sum.tolist(),
            "tokens": st.tokens.tolist(),
            "examples": st.examples.tolist(),
            "reference_loss_sum": None if st.reference_loss_sum is None else st.reference_loss_sum.tolist(),
            "example_losses": st.example_losses,
        }
        for st in seen
    ]


def weighted_job(out: str, parallel: str, accumulation: int) -> None:
    """Train 3 steps with per-skill loss weights (0.25, 1.5) and a reference model; the first process
    writes the step rows, the statistics and the trained weights to `out`."""
    tok, sets = toy_sets()
    model, _ = build_tiny_model(TINY, seed=0)
    reference, _ = build_tiny_model(TINY, seed=1)
    sampler = RecordingSampler([64, 64], np.array([0.25, 1.5]), reference=True)
    settings = TrainSettings(
        steps=3,
        batch_size=8,
        gradient_accumulation_steps=accumulation,
        lr=3e-3,
        warmup_steps=1,
        parallel=parallel,
    )
    result = train(model, tok, sets, sampler, settings, CPU, reference=reference)
    weights = {n: full.tolist() for n, full in _whole_weights(model).items()}
    if processes.is_main():
        Path(out).write_text(
            json.dumps(
                {"steps": result.steps.to_dict("list"), "stats": stats_rows(sampler.seen), "weights": weights}
            )
        )


def _whole_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from skillmix.engine.resume import trainable_state

    return trainable_state(model)
