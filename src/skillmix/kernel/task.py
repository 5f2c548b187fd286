"""The prompt-based classification task of the eNTK stage (the kernel_task job).

The task comes from the sliced data: the examples of `kernel.skills`, whose answers end in a
label word. With `label_split: last_word`, an answer such as "b = val 1" puts "b = val" at the
end of the prompt and makes "1" the label word; with `whole`, the answer is the label word.
Training uses `k_shot` examples per label drawn (seeded) from the training slices; the
validation and test slices are the sets X that the kernels and solvers are evaluated on.

Its features, kernels and solutions are in ``task_kernels``; fine-tuning on it in ``finetuning``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def split_answer(prompt: str, answer: str, how: str) -> tuple[str, str]:
    """(prompt ending at the answer position, label word) of one example."""
    if how == "whole":
        return prompt, answer.strip()
    if how == "last_word":
        head, _, word = answer.strip().rpartition(" ")
        return (f"{prompt} {head}" if head else prompt), word
    raise SkillmixInputError(f"kernel.label_split must be whole or last_word, got {how!r}")


def build_task(
    frames: dict[str, pd.DataFrame],
    label_split: str,
    words: Sequence[str] | None,
    k_shot: int,
    seed: int,
    max_eval: int | None,
) -> tuple[pd.DataFrame, list[str]]:
    """The task table (split, id, skill, prompt, word, label) and the label words in label order.

    `frames` maps each split to the rows of the kernel skills. Label words are `words` when
    given (rows with another word are an error), else the sorted distinct words of the training
    rows. Training keeps `k_shot` rows per label (all if fewer, with a warning); val and test
    keep their first `max_eval` rows.
    """
    parts = []
    for split in SPLITS:
        frame = frames.get(split)
        if frame is None or frame.empty:
            raise SkillmixInputError(f"kernel task: the {split} split of the kernel skills has no rows")
        pairs = [
            split_answer(p, a, label_split) for p, a in zip(frame["prompt"], frame["answer"], strict=True)
        ]
        parts.append(
            pd.DataFrame(
                {
                    "split": split,
                    "id": frame["id"].astype(str).to_numpy(),
                    "skill": frame["skill"].astype(str).to_numpy(),
                    "prompt": [p for p, _ in pairs],
                    "word": [w for _, w in pairs],
                }
            )
        )
    table = pd.concat(parts, ignore_index=True)
    labels = list(words) if words else sorted(table.loc[table["split"] == "train", "word"].unique())
    if len(labels) < 2:
        raise SkillmixInputError(f"kernel task: need at least two label words, found {labels}")
    unknown = sorted(set(table["word"]) - set(labels))
    if unknown:
        raise SkillmixInputError(
            f"kernel task: answers end in words {unknown[:5]} that are not label words {labels}; "
            "set kernel.label_words or choose kernel.skills with a fixed label set"
        )
    table["label"] = table["word"].map({w: i for i, w in enumerate(labels)}).astype(int)
    train = table[table["split"] == "train"]
    rng = np.random.default_rng([seed, 13])
    keep = []
    for label in range(len(labels)):
        rows = train.index[train["label"] == label].to_numpy()
        if len(rows) < k_shot:
            log.warning(
                "kernel task: label %r has only %d training rows (k_shot %d)",
                labels[label],
                len(rows),
                k_shot,
            )
        keep.extend(sorted(rng.permutation(rows)[:k_shot].tolist()))
    evals = [
        table[table["split"] == s].head(max_eval) if max_eval else table[table["split"] == s]
        for s in SPLITS[1:]
    ]
    return pd.concat([table.loc[sorted(keep)], *evals], ignore_index=True), labels
