"""Per-skill evaluation: mean answer-token loss and greedy-answer accuracy.

Accuracy scores a greedy answer by its first character (`first_char`: the bit of LEGO and
XOR, the digit of Addition, read as Skill-It reads them) or as a whole (`exact`); `auto`
takes first_char for a skill whose answers are all one character. Exact match is reported
beside it in every case.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skillmix.engine.encoding import EncodedSet, collate, example_mean_losses, left_pad
from skillmix.engine.modeling import Runtime
from skillmix.infra.errors import SkillmixInputError

METRIC_COLUMNS = ["skill", "loss", "accuracy", "exact", "n"]
SCORES = ("auto", "exact", "first_char")
_STRIP = " \t\n.,;:!?"


def first_char(text: str) -> str:
    """The first character of `text` after leading spaces and punctuation ("" if none)."""
    stripped = text.lstrip(_STRIP)
    return stripped[:1]


def score_answers(predicted: list[str], answers: list[str], score: str = "auto") -> tuple[float, float]:
    """(accuracy under `score`, exact-match accuracy) of predicted against reference answers."""
    if score not in SCORES:
        raise SkillmixInputError(f"eval.score must be one of {list(SCORES)}, got {score!r}")
    refs = [a.strip() for a in answers]
    exact = sum(p == a for p, a in zip(predicted, refs, strict=True)) / len(refs)
    if score == "auto":
        score = "first_char" if all(len(a) == 1 for a in refs) else "exact"
    if score == "exact":
        return exact, exact
    hits = sum(first_char(p) == first_char(a) != "" for p, a in zip(predicted, refs, strict=True))
    return hits / len(refs), exact


@torch.no_grad()
def example_losses(
    model: PreTrainedModel, data: EncodedSet, pad_id: int, runtime: Runtime, batch_size: int
) -> list[float]:
    """The mean label-token loss of every example of `data`, in order."""
    out: list[float] = []
    for start in range(0, len(data), batch_size):
        batch = collate(
            data.input_ids[start : start + batch_size],
            data.labels[start : start + batch_size],
            pad_id,
        )
        batch = {k: v.to(runtime.device) for k, v in batch.items()}
        with runtime.autocast():
            out.extend(example_mean_losses(model, batch).tolist())
    return out


def generation_batches(
    prompt_lengths: list[int], answer_lengths: list[int], batch_size: int
) -> list[list[int]]:
    """Group example indices into generation batches that never outgrow a single example.

    A left-padded batch spans its longest prompt plus its longest answer; each batch keeps
    that sum within the longest encoded example, so generation stays inside the positions
    the examples were cut to. Examples are grouped by length to keep padding small.
    """
    limit = max(p + a for p, a in zip(prompt_lengths, answer_lengths, strict=True))
    order = sorted(range(len(prompt_lengths)), key=lambda i: (prompt_lengths[i], answer_lengths[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    widest = longest = 0
    for i in order:
        p, a = prompt_lengths[i], answer_lengths[i]
        if current and (len(current) == batch_size or max(widest, p) + max(longest, a) > limit):
            batches.append(current)
            current, widest, longest = [], 0, 0
        current.append(i)
        widest, longest = max(widest, p), max(longest, a)
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def greedy_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: EncodedSet,
    runtime: Runtime,
    batch_size: int,
) -> list[str]:
    """Greedy continuations of every prompt of `data`, cut at end-of-sequence, stripped.

    Each batch generates as many tokens as its longest reference answer (end-of-sequence
    included), so an answer that does not stop where the reference stops cannot match.
    """
    pad = tokenizer.pad_token_id
    answer_lengths = [sum(1 for t in lab if t >= 0) for lab in data.labels]
    prompt_lengths = [len(p) for p in data.prompt_ids]
    out: list[str] = [""] * len(data)
    for batch_ids in generation_batches(prompt_lengths, answer_lengths, batch_size):
        batch = {
            k: v.to(runtime.device) for k, v in left_pad([data.prompt_ids[i] for i in batch_ids], pad).items()
        }
        with runtime.autocast():
            generated = model.generate(
                **batch,
                max_new_tokens=max(answer_lengths[i] for i in batch_ids),
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
        for i, row in zip(batch_ids, generated[:, batch["input_ids"].shape[1] :].tolist(), strict=True):
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id)]
            out[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return out


def evaluate_skills(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sets: list[EncodedSet],
    runtime: Runtime,
    batch_size: int,
    accuracy: bool = True,
    score: str = "auto",
) -> pd.DataFrame:
    """One row per skill: mean over examples of the mean label-token loss, accuracy, exact match.

    `score` is how `accuracy` reads an answer (see :func:`score_answers`). Accuracy and exact
    are NaN for plain-text skills (no answers) or when `accuracy` is False.
    """
    was_training = model.training
    model.eval()
    rows = []
    for data in sets:
        losses = example_losses(model, data, tokenizer.pad_token_id, runtime, batch_size)
        acc = exact = math.nan
        if accuracy and data.has_answers:
            predicted = greedy_answers(model, tokenizer, data, runtime, batch_size)
            acc, exact = score_answers(predicted, data.answers, score)
        rows.append(
            {
                "skill": data.skill,
                "loss": sum(losses) / len(losses),
                "accuracy": acc,
                "exact": exact,
                "n": len(data),
            }
        )
    model.train(was_training)
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)
