"""Turning slice rows into token ids, label masks and padded batches.

Prompt/answer rows: the loss covers the answer tokens and, unless `eos_label` is False, the
end-of-sequence token (`loss_on="sequence"` covers the prompt tokens too, as the original
Skill-It trains); the answer region is `" " + answer`, matching
`text = prompt + " " + answer`. Plain-text rows (empty prompt and answer): the loss covers
every token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from skillmix.infra.errors import SkillmixInputError

IGNORE = -100


@dataclass
class EncodedSet:
    """The encoded rows of one skill: ids, labels and prompts kept for generation."""

    skill: str
    ids: list[str]
    input_ids: list[list[int]]
    labels: list[list[int]]
    prompt_ids: list[list[int]] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def has_answers(self) -> bool:
        """True when the rows are prompt/answer pairs (accuracy is defined)."""
        return bool(self.answers) and all(a != "" for a in self.answers)


def special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer itself puts before a text (e.g. BOS), often none."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def encode_row(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    answer: str,
    text: str,
    max_length: int,
    prefix: list[int] | None = None,
    loss_on: str = "answer",
    eos_label: bool = True,
) -> tuple[list[int], list[int], list[int], bool]:
    """Token ids, labels and generation prompt of one row, cut to `max_length` tokens.

    `loss_on`: "answer" (labels on the answer) or "sequence" (on prompt and answer);
    `eos_label`: whether the end-of-sequence token is a label.

    Too-long prompts lose tokens from their start (the answer is kept); a too-long text or
    answer loses tokens from its end. Returns (input_ids, labels, prompt_ids, truncated).
    """
    if prefix is None:
        prefix = special_prefix(tokenizer)
    eos = [tokenizer.eos_token_id]
    if prompt == "" and answer == "":
        body = tokenizer(text, add_special_tokens=False)["input_ids"] + eos
        room = max_length - len(prefix)
        truncated = len(body) > room
        body = body[:room]
        return prefix + body, [IGNORE] * len(prefix) + body, [], truncated
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + eos
    room = max_length - len(prefix)
    truncated = len(p) + len(a) > room
    if len(a) > room - 1:
        a = a[: room - 1]
    p = p[len(p) - (room - len(a)) :] if len(p) > room - len(a) else p
    input_ids = prefix + p + a
    answer_labels = a if eos_label else [*a[:-1], IGNORE]
    prompt_labels = p if loss_on == "sequence" else [IGNORE] * len(p)
    labels = [IGNORE] * len(prefix) + prompt_labels + answer_labels
    return input_ids, labels, prefix + p, truncated


def encode_frame(
    tokenizer: PreTrainedTokenizerBase,
    frame: pd.DataFrame,
    skill: str,
    max_length: int,
    loss_on: str = "answer",
    eos_label: bool = True,
) -> EncodedSet:
    """Encode the rows of one skill's slice (columns id, prompt, answer, text).

    `loss_on` and `eos_label` choose the label tokens, as in :func:`encode_row`.
    """
    if loss_on not in ("answer", "sequence"):
        raise SkillmixInputError(f"loss_on must be answer or sequence, got {loss_on!r}")
    out = EncodedSet(skill=skill, ids=[], input_ids=[], labels=[])
    prefix = special_prefix(tokenizer)
    for row in frame.itertuples(index=False):
        ids, labels, prompt_ids, cut = encode_row(
            tokenizer, row.prompt, row.answer, row.text, max_length, prefix, loss_on, eos_label
        )
        out.ids.append(str(row.id))
        out.input_ids.append(ids)
        out.labels.append(labels)
        out.prompt_ids.append(prompt_ids)
        out.answers.append(row.answer)
        out.truncated += int(cut)
    return out


def collate(input_ids: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch tensors: input_ids, attention_mask, labels (pads ignored)."""
    width = max(len(x) for x in input_ids)
    n = len(input_ids)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    lab = torch.full((n, width), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, (x, y) in enumerate(zip(input_ids, labels, strict=True)):
        ids[i, : len(x)] = torch.tensor(x)
        lab[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def left_pad(prompts: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompt batch for generation: input_ids, attention_mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token cross-entropy and the label mask, both [batch, seq-1].

    Positions whose label is ignored get loss 0 and mask 0. Computed in float32, or float64
    for a float64 model.
    """
    shift_logits = logits[:, :-1, :].to(torch.promote_types(logits.dtype, torch.float32))
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.clamp_min(0).reshape(-1),
        reduction="none",
    ).view_as(shift_labels)
    return loss * mask, mask


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean label-token loss of each example, [batch]."""
    loss, mask = token_losses(logits, labels)
    return loss.sum(1) / mask.sum(1).clamp_min(1)
