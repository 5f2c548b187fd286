"""Selections as messages JSONL and prompt/completion JSONL, read as TRL and open-instruct read them:
`datasets.load_dataset("json")`, TRL's format checks, and TRL's SFTTrainer training on them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from datasets import load_dataset

from skillmix.data.export import write_training_files
from skillmix.data.sources import COLUMNS

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def plain_frame() -> pd.DataFrame:
    rows = [
        {"id": "a", "skill": "add", "prompt": "1+1=", "answer": "2", "text": "1+1= 2", "messages": ""},
        {
            "id": "b",
            "skill": "add",
            "prompt": "Q: 2+3?\nA:",
            "answer": "5",
            "text": "Q: 2+3?\nA: 5",
            "messages": "",
        },
        {"id": "c", "skill": "story", "prompt": "", "answer": "", "text": "once upon a time", "messages": ""},
    ]
    return pd.DataFrame(rows)[COLUMNS]


def chat_frame() -> pd.DataFrame:
    frame = plain_frame().iloc[:2].copy()
    frame.loc[2] = {
        "id": "d",
        "skill": "chat",
        "prompt": "",
        "answer": "",
        "text": "",
        "messages": json.dumps(CHAT),
    }
    return frame


def write(frame, tmp_path):
    paths = tmp_path / "sel.messages.jsonl", tmp_path / "sel.prompt_completion.jsonl"
    write_training_files(frame, *paths)
    return [load_dataset("json", data_files=str(p), split="train") for p in paths]


def test_plain_rows_as_messages_and_prompt_completion(tmp_path) -> None:
    from trl.data_utils import is_conversational

    messages, pc = write(plain_frame(), tmp_path)
    assert messages.column_names == ["messages", "id", "skill"]
    assert messages[0]["messages"] == [
        {"role": "user", "content": "1+1="},
        {"role": "assistant", "content": "2"},
    ]
    assert messages[2]["messages"] == [{"role": "assistant", "content": "once upon a time"}]
    assert all(is_conversational(row) for row in messages)
    assert pc.column_names == ["prompt", "completion", "id", "skill"]
    # the completion is what follows the prompt in the example's text, separator included
    assert [(r["prompt"], r["completion"]) for r in pc] == [
        ("1+1=", " 2"),
        ("Q: 2+3?\nA:", " 5"),
        ("", "once upon a time"),
    ]
    assert not any(is_conversational(row) for row in pc)
    assert [r["id"] for r in pc] == [r["id"] for r in messages] == ["a", "b", "c"]


def test_a_selection_with_chats_is_conversational_throughout(tmp_path) -> None:
    from trl.data_utils import is_conversational

    messages, pc = write(chat_frame(), tmp_path)
    assert messages[2]["messages"] == CHAT
    assert pc[2]["prompt"] == CHAT[:2] and pc[2]["completion"] == CHAT[2:]
    assert pc[0]["prompt"] == [{"role": "user", "content": "1+1="}]
    assert pc[0]["completion"] == [{"role": "assistant", "content": "2"}]
    assert all(is_conversational(row) for row in pc)


@pytest.mark.parametrize("kind", ["messages", "prompt_completion", "chat_prompt_completion"])
def test_trl_sft_trainer_trains_on_the_files_as_they_are(tmp_path, kind) -> None:
    """TRL's SFTTrainer prepares (tokenises, masks) and trains a step on each file, unchanged."""
    from trl import SFTConfig, SFTTrainer

    from skillmix.engine.modeling import build_tiny_model
    from skillmix.engine.tokenizers import word_tokenizer

    frame = chat_frame() if kind == "chat_prompt_completion" else plain_frame()
    messages, pc = write(frame, tmp_path)
    data = messages if kind == "messages" else pc
    words = " ".join(str(v) for v in frame[["prompt", "answer", "text"]].to_numpy().ravel()).split()
    words += [w for turn in CHAT for w in turn["content"].split()] + ["user:", "assistant:", "system:"]
    tokenizer = word_tokenizer(words)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + ' ' }}"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ eos_token }}{% endgeneration %}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    model, _ = build_tiny_model(
        {"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2, "max_positions": 64}, 0
    )
    model.resize_token_embeddings(len(tokenizer))
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        max_length=64,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.remove_columns(["id", "skill"]),
                         processing_class=tokenizer)  # fmt: skip
    prepared = trainer.train_dataset
    assert "input_ids" in prepared.column_names and len(prepared) == len(data)
    if kind != "messages":
        # prompt-completion: the loss is on the completion tokens only (TRL masks the prompt, in
        # `completion_mask` or, in newer versions, as -100 labels)
        partial = []
        for row in prepared:
            mask = row["completion_mask"] if "completion_mask" in row else [t != -100 for t in row["labels"]]
            partial.append(0 < sum(mask) < len(row["input_ids"]))
        # every row with a prompt (all but the plain-text row "c") has its prompt masked
        assert partial == [True, True, kind == "chat_prompt_completion"]
    out = trainer.train()
    assert out.global_step == 1 and out.training_loss > 0
