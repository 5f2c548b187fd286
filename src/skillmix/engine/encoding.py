"""Turning slice rows into token ids, label masks and padded batches.

Prompt/answer rows: the loss covers the answer tokens and, unless `eos_label` is False, the
end-of-sequence token (`loss_on="sequence"` covers the prompt tokens too, as the original
Skill-It trains); the answer region is `" " + answer`, matching
`text = prompt + " " + answer`. Plain-text rows (empty prompt and answer): the loss covers
every token. Chat rows (a `messages` list): the tokenizer's chat template, the loss on the
assistant turns. Losses take the LM head at the label positions only (:func:`label_logits`).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
from transformers import PreTrainedTokenizerBase

from skillmix.data.chat import parse_messages
from skillmix.infra.errors import SkillmixInputError

if TYPE_CHECKING:  # torch is imported where it is used: encoding rows (slicing's checks) needs none
    import torch

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
    answers_cut: int = 0
    """Examples whose answer (a plain text's end, a chat's last turns) lost tokens to max_length."""

    def __len__(self) -> int:
        return len(self.input_ids)

    @functools.cached_property
    def label_counts(self) -> list[int]:
        """Each example's label tokens that its loss averages over (see :func:`label_count`)."""
        return [label_count(labels) for labels in self.labels]

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
    eos = tokenizer.eos_token_id
    if prompt == "" and answer == "":
        return _text_row(tokenizer(text, add_special_tokens=False)["input_ids"], eos, max_length, prefix)
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    return _pair_row(p, a, eos, max_length, prefix, loss_on, eos_label)


def _text_row(
    body: list[int], eos: int, max_length: int, prefix: list[int]
) -> tuple[list[int], list[int], list[int], bool]:
    """:func:`encode_row` of a plain text whose tokens are `body`."""
    body = [*body, eos]
    room = max_length - len(prefix)
    truncated = len(body) > room
    body = body[:room]
    return prefix + body, [IGNORE] * len(prefix) + body, [], truncated


def _pair_row(
    p: list[int], a: list[int], eos: int, max_length: int, prefix: list[int], loss_on: str, eos_label: bool
) -> tuple[list[int], list[int], list[int], bool]:
    """:func:`encode_row` of a prompt/answer row whose prompt tokens are `p` and answer tokens
    (`" " + answer`, without end-of-sequence) are `a`."""
    a = [*a, eos]
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


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Each text's token ids without special tokens, as `tokenizer(text, add_special_tokens=False)`
    gives them, from one batched call over the distinct texts (a row's list may be another's)."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return []
    by_text = dict(zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"], strict=True))
    return [by_text[t] for t in texts]


# The LESS encoding of chat turns (docs/methods/less.md#encoding), used when a tokenizer has no
# chat template of its own.
TULU_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{{ '<|assistant|>\\n' + m['content'] | trim + eos_token + '\\n' }}"
    "{% else %}{{ '<|' + m['role'] + '|>\\n' + m['content'] | trim + '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _render(tokenizer: PreTrainedTokenizerBase, turns: list[dict[str, str]], generation: bool) -> str:
    template = None if getattr(tokenizer, "chat_template", None) else TULU_TEMPLATE
    return tokenizer.apply_chat_template(
        turns, chat_template=template, tokenize=False, add_generation_prompt=generation
    )


def encode_messages(
    tokenizer: PreTrainedTokenizerBase, turns: list[dict[str, str]], max_length: int, where: str = "messages"
) -> tuple[list[int], list[int], list[int], bool]:
    """Token ids, labels and generation prompt of a chat, cut from the right to `max_length` tokens.

    The text is the tokenizer's chat template (when it has none, the LESS format of
    docs/methods/less.md#encoding); labels cover each assistant turn as the template renders it
    (its text and end-of-turn tokens), the rest is IGNORE. Cutting from the right is what the
    original does; an example whose answer is cut away keeps no label. The generation prompt is
    the chat up to the last assistant turn with the assistant header, uncut. Returns (input_ids,
    labels, prompt_ids, truncated).
    """
    pieces: list[tuple[str, bool]] = []
    done = ""
    for k, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before = _render(tokenizer, turns[:k], generation=True) if k else _render(tokenizer, [], True)
        upto = _render(tokenizer, turns[: k + 1], generation=False)
        if not before.startswith(done) or not upto.startswith(before):
            raise SkillmixInputError(
                f"{where}: the tokenizer's chat template does not render a chat as a prefix of its "
                "continuation; labels on the assistant turns cannot be placed"
            )
        pieces += [(before[len(done) :], False), (upto[len(before) :], True)]
        done = upto
    prompt_text = _render(tokenizer, turns[:-1], generation=True)
    ids: list[int] = []
    labels: list[int] = []
    for text, supervised in pieces:
        if not text:
            continue
        part = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += part
        labels += part if supervised else [IGNORE] * len(part)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    truncated = len(ids) > max_length
    return ids[:max_length], labels[:max_length], prompt_ids, truncated


def encode_frame(
    tokenizer: PreTrainedTokenizerBase,
    frame: pd.DataFrame,
    skill: str,
    max_length: int,
    loss_on: str = "answer",
    eos_label: bool = True,
) -> EncodedSet:
    """Encode the rows of one skill's slice (columns id, prompt, answer, text, optionally messages).

    A row with messages (a list of turns or its JSON text) is a chat, encoded by
    :func:`encode_messages` (loss on the assistant turns, cut from the right); the others by
    :func:`encode_row`, where `loss_on` and `eos_label` choose the label tokens.
    """
    if loss_on not in ("answer", "sequence"):
        raise SkillmixInputError(f"loss_on must be answer or sequence, got {loss_on!r}")
    prefix = special_prefix(tokenizer)
    ids = [str(i) for i in frame["id"].tolist()]
    prompts, answers, texts = (frame[c].tolist() for c in ("prompt", "answer", "text"))
    chats = frame["messages"].tolist() if "messages" in frame.columns else [""] * len(frame)
    plain = [isinstance(chat, str) and chat == "" for chat in chats]
    text_only = [
        is_plain and p == "" and a == "" for is_plain, p, a in zip(plain, prompts, answers, strict=True)
    ]
    # the plain rows' strings tokenized in one batch: texts alone, else prompt and " " + answer
    alone = [k for k, is_text in enumerate(text_only) if is_text]
    pairs = [k for k, is_plain in enumerate(plain) if is_plain and not text_only[k]]
    tokens = token_ids(
        tokenizer, [texts[k] for k in alone] + [prompts[k] for k in pairs] + [" " + answers[k] for k in pairs]
    )
    body = dict(zip(alone, tokens, strict=False))
    prompt_tokens = dict(zip(pairs, tokens[len(alone) :], strict=False))
    answer_tokens = dict(zip(pairs, tokens[len(alone) + len(pairs) :], strict=True))
    out = EncodedSet(skill=skill, ids=ids, input_ids=[], labels=[], answers=answers)
    eos = tokenizer.eos_token_id
    for k, chat in enumerate(chats):
        if k in body:
            row_ids, labels, prompt_ids, cut = _text_row(body[k], eos, max_length, prefix)
            lost = cut
        elif k in answer_tokens:
            a = answer_tokens[k]
            row_ids, labels, prompt_ids, cut = _pair_row(
                prompt_tokens[k], a, eos, max_length, prefix, loss_on, eos_label
            )
            # a cut prompt only loses its start; what counts is whether the answer lost tokens
            lost = cut and (prompts[k] == "" or answer_cut(len(a), max_length, prefix))
        else:
            where = f"{skill}, example {ids[k]}"
            row_ids, labels, prompt_ids, cut = encode_messages(
                tokenizer, parse_messages(chat, where), max_length, where
            )
            lost = cut
        out.input_ids.append(row_ids)
        out.labels.append(labels)
        out.prompt_ids.append(prompt_ids)
        out.truncated += int(cut)
        out.answers_cut += int(lost)
    return out


def answer_cut(n_answer_tokens: int, max_length: int, prefix: list[int]) -> bool:
    """Whether :func:`encode_row` cuts tokens of an answer of `n_answer_tokens` tokens (`" " +
    answer`, without its end-of-sequence token) to fit `max_length` beside one prompt token."""
    return n_answer_tokens + 1 > max_length - len(prefix) - 1


def label_count(labels: list[int]) -> int:
    """The label tokens of one encoded example that its loss averages over (all but position 0, which
    no position predicts)."""
    return sum(1 for t in labels[1:] if t != IGNORE)


def collate(input_ids: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch tensors: input_ids, attention_mask, labels (pads ignored)."""
    import torch

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
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _keeps_logits(model: torch.nn.Module) -> bool:
    """True when the model's forward takes transformers' `logits_to_keep` (through peft and DDP too)."""
    import torch

    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return _takes_logits_to_keep(type(inner))


@functools.cache
def _takes_logits_to_keep(cls: type) -> bool:
    """Whether a model class's forward has a `logits_to_keep` parameter (read once per class)."""
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def label_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The next-token logits at the positions that predict a label token, [B, P, V], and the labels
    they predict, [B, P].

    Row b's label positions come first in its row, in order; P is the largest count in the batch
    and shorter rows are filled with their last position, target IGNORE. So the LM head runs at
    the answer positions only (transformers' `logits_to_keep` with per-row positions; models
    without it compute every position and the others are dropped). A row without labels keeps one
    position, IGNORE.
    """
    import torch

    following = batch["labels"][:, 1:]
    has = following != IGNORE
    counts = has.sum(1)
    width = max(1, int(counts.max()))
    # per row: its label positions in order, then its last position (filler)
    order = torch.argsort((~has).to(torch.int8), dim=1, stable=True)[:, :width]
    fill = torch.arange(width, device=has.device)[None] >= counts[:, None]
    last = (batch["attention_mask"].sum(1) - 1).clamp_min(0)[:, None].expand_as(order)
    positions = torch.where(fill, last.clamp_max(following.shape[1] - 1), order)
    targets = torch.where(fill, torch.full_like(order, IGNORE), following.gather(1, positions))
    if _keeps_logits(model):
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=positions
        ).logits
    else:
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = torch.take_along_dim(full, positions[..., None], dim=1)
    return logits, targets


def target_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each position's logits [B, P, V] against its target [B, P] and the target mask.

    Positions whose target is IGNORE get loss 0 and mask 0. Computed in float32, or float64 for a
    float64 model.
    """
    import torch

    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    mask = targets != IGNORE
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.clamp_min(0).reshape(-1), reduction="none"
    ).view_as(targets)
    return loss * mask, mask


def target_means(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's mean loss over its targets, [B] (see :func:`target_losses`)."""

    loss, mask = target_losses(logits, targets)
    return loss.sum(1) / mask.sum(1).clamp_min(1)


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean label-token loss of each example, [batch], from the logits of every position."""

    return target_means(logits[:, :-1, :], labels[:, 1:])


def label_token_losses(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-label-position losses and mask, [B, P], of a collated batch (the head at label positions only)."""

    return target_losses(*label_logits(model, batch))


def example_mean_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each example's mean label-token loss, [B], of a collated batch (the head at label positions only)."""

    return target_means(*label_logits(model, batch))
