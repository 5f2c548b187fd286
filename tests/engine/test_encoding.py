"""Chat rows encoded with a chat template (loss on the assistant turns only), and the LM head run
at the label positions only."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from skillmix.data.chat import chat_fields, parse_messages
from skillmix.engine.encoding import (
    IGNORE,
    collate,
    encode_frame,
    encode_messages,
    example_mean_losses,
    label_logits,
    label_token_losses,
    per_example_loss,
    target_losses,
)
from skillmix.engine.modeling import build_tiny_model
from skillmix.engine.tokenizers import byte_tokenizer
from skillmix.infra.errors import SkillmixInputError

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Is it hot?"},
    {"role": "assistant", "content": "yes"},
    {"role": "user", "content": "Sure?"},
    {"role": "assistant", "content": "no!"},
]


def supervised_text(tokenizer, ids, labels) -> str:
    return tokenizer.decode([t for t in labels if t != IGNORE])


def test_chat_template_labels_cover_the_assistant_turns_only():
    tok = byte_tokenizer()
    tok.chat_template = CHATML
    ids, labels, prompt_ids, cut = encode_messages(tok, TURNS, 512)
    text = tok.decode(ids)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nIs it hot?<|im_end|>\n"
        "<|im_start|>assistant\nyes<|im_end|>\n<|im_start|>user\nSure?<|im_end|>\n"
        "<|im_start|>assistant\nno!<|im_end|>\n"
    )
    assert len(labels) == len(ids) and not cut
    # both assistant turns (text and end-of-turn), nothing of the system, user or role headers
    assert supervised_text(tok, ids, labels) == "yes<|im_end|>\nno!<|im_end|>\n"
    assert tok.decode(prompt_ids) == text[: text.rindex("no!")]
    for i, (t, lab) in enumerate(zip(ids, labels, strict=True)):
        assert lab in (IGNORE, t), i


def test_without_a_template_the_less_format_is_used():
    tok = byte_tokenizer()
    assert not getattr(tok, "chat_template", None)
    ids, labels, prompt_ids, _ = encode_messages(tok, TURNS[1:3], 512)
    eos = tok.eos_token
    want = f"<|user|>\nIs it hot?\n<|assistant|>\nyes{eos}\n"
    assert ids == tok(want, add_special_tokens=False)["input_ids"]
    assert [t for t in labels if t != IGNORE] == tok(f"yes{eos}\n", add_special_tokens=False)["input_ids"]
    assert tok.decode(prompt_ids) == "<|user|>\nIs it hot?\n<|assistant|>\n"


def test_chats_are_cut_from_the_right():
    tok = byte_tokenizer()
    tok.chat_template = CHATML
    full, full_labels, _, _ = encode_messages(tok, TURNS, 512)
    ids, labels, _, cut = encode_messages(tok, TURNS, 40)
    assert cut and ids == full[:40] and labels == full_labels[:40]
    assert all(t == IGNORE for t in labels)  # the answers were cut away: no label is left


def test_encode_frame_reads_the_messages_column():
    tok = byte_tokenizer()
    tok.chat_template = CHATML
    chat = chat_fields(parse_messages(json.dumps(TURNS), "row"))
    assert chat["prompt"] == "Sure?" and chat["answer"] == "no!"
    frame = pd.DataFrame(
        [
            {"id": "a", "skill": "s", **chat},
            {"id": "b", "skill": "s", "prompt": "2+2=", "answer": "4", "text": "2+2= 4", "messages": ""},
        ]
    )
    enc = encode_frame(tok, frame, "s", 512)
    assert enc.input_ids[0] == encode_messages(tok, TURNS, 512)[0]
    assert supervised_text(tok, enc.input_ids[1], enc.labels[1]) == f" 4{tok.eos_token}"
    assert enc.answers == ["no!", "4"]


@pytest.mark.parametrize(
    "value, message",
    [
        ("[", "not valid JSON"),
        ("[]", "non-empty list"),
        ([{"role": "bot", "content": "x"}], "role 'bot'"),
        ([{"role": "user", "content": 3}], "content must be a string"),
        ([{"role": "user", "content": "x"}], "last turn must be the assistant's"),
        ([{"role": "user", "text": "x"}], "role and content"),
    ],
)
def test_bad_messages_are_named(value, message):
    with pytest.raises(SkillmixInputError, match=message):
        parse_messages(value, "data.jsonl: row 7")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_label_logits_equal_the_full_logits_at_the_label_positions(arch):
    tiny = {"architecture": arch, "hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4}
    model, _ = build_tiny_model(tiny, seed=0)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, 200, (n,), generator=gen).tolist() for n in (7, 12, 4)]
    labels = [[IGNORE] * (n - k) + r[n - k :] for r, n, k in zip(rows, (7, 12, 4), (3, 4, 2), strict=True)]
    batch = collate(rows, labels, 0)
    logits, targets = label_logits(model, batch)
    # answers sit at different places per row: each row's own label positions, the longest
    # row's count wide, IGNORE where a row has fewer
    assert logits.shape[:2] == targets.shape == (3, 4)
    assert (targets != IGNORE).sum(1).tolist() == [3, 4, 2]
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss, mask = label_token_losses(model, batch)
    want_loss, want_mask = target_losses(full[:, :-1], batch["labels"][:, 1:])  # every position's loss
    assert int(mask.sum()) == int(want_mask.sum()) == 9
    torch.testing.assert_close(loss.sum(1), want_loss.sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(example_mean_losses(model, batch), per_example_loss(full, batch["labels"]))
