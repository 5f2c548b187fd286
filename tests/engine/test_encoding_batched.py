"""encode_frame tokenizes a slice in one batched call over its distinct strings (issue 29); the
encoded rows are exactly what the former row-by-row encoding gave, kept here as the reference."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import yaml

from skillmix.data.chat import chat_fields, parse_messages
from skillmix.data.slicing import make_slices, read_slices
from skillmix.data.sources import resolve_tiny_tokenizer
from skillmix.engine.encoding import IGNORE, EncodedSet, encode_frame, encode_messages, special_prefix
from skillmix.engine.tokenizers import byte_tokenizer, tiny_tokenizer
from skillmix.infra.config import validate_config

REPO = Path(__file__).resolve().parents[2]


def reference_row(tokenizer, prompt, answer, text, max_length, prefix, loss_on, eos_label):
    """encode_row as it was before the batched encoding (one tokenizer call per string)."""
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


def reference_frame(tokenizer, frame, skill, max_length, loss_on="answer", eos_label=True) -> EncodedSet:
    """encode_frame as it was before the batched encoding (row by row)."""
    out = EncodedSet(skill=skill, ids=[], input_ids=[], labels=[])
    prefix = special_prefix(tokenizer)
    chats = frame["messages"].tolist() if "messages" in frame.columns else [""] * len(frame)
    for row, chat in zip(frame.itertuples(index=False), chats, strict=True):
        if isinstance(chat, str) and chat == "":
            ids, labels, prompt_ids, cut = reference_row(
                tokenizer, row.prompt, row.answer, row.text, max_length, prefix, loss_on, eos_label
            )
            n_answer = len(tokenizer(" " + row.answer, add_special_tokens=False)["input_ids"]) + 1
            lost = cut and (row.prompt == "" or n_answer > max_length - len(prefix) - 1)
        else:
            turns = parse_messages(chat, f"{skill}, example {row.id}")
            ids, labels, prompt_ids, cut = encode_messages(
                tokenizer, turns, max_length, f"{skill}, example {row.id}"
            )
            lost = cut
        out.ids.append(str(row.id))
        out.input_ids.append(ids)
        out.labels.append(labels)
        out.prompt_ids.append(prompt_ids)
        out.answers.append(row.answer)
        out.truncated += int(cut)
        out.answers_cut += int(lost)
    return out


@pytest.fixture(scope="module")
def xor_slices(tmp_path_factory):
    """The default config's XOR slices (train and val) and its tiny model block."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(config)
    config["model"]["tiny"] = resolve_tiny_tokenizer(config["model"], config["source"])
    root = tmp_path_factory.mktemp("slices")
    manifest = make_slices(config["source"], config["split"], root)
    skills = [s["name"] for s in manifest["skills"]]
    slugs = [s["slug"] for s in manifest["skills"]]
    frames = {
        split: read_slices([root / split / f"{slug}.parquet" for slug in slugs], skills, "test")
        for split in ("train", "val")
    }
    return config["model"]["tiny"], skills, frames


@pytest.mark.parametrize("kind", ["word", "byte"])
@pytest.mark.parametrize(
    "max_length, loss_on, eos_label", [(16, "answer", True), (16, "sequence", True), (5, "answer", False)]
)
def test_the_default_xor_slices_encode_as_row_by_row(xor_slices, kind, max_length, loss_on, eos_label):
    tiny, skills, frames = xor_slices
    tokenizer = tiny_tokenizer({**tiny, "tokenizer": kind})
    truncated = 0
    for split, by_skill in frames.items():
        for skill in skills:
            got = encode_frame(tokenizer, by_skill[skill], skill, max_length, loss_on, eos_label)
            want = reference_frame(tokenizer, by_skill[skill], skill, max_length, loss_on, eos_label)
            assert asdict(got) == asdict(want), (split, skill)
            truncated += got.truncated
    assert truncated > 0 if max_length == 5 else truncated == 0  # 5 cuts the composites' prompts


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TURNS = [
    {"role": "user", "content": "Is it hot?"},
    {"role": "assistant", "content": "yes"},
    {"role": "user", "content": "Sure?"},
    {"role": "assistant", "content": "no, it is not hot at all"},
]


def mixed_frame() -> pd.DataFrame:
    """Chats, plain texts, prompt/answer pairs (some repeated, one with an empty prompt), a table row."""
    chat = chat_fields(parse_messages(json.dumps(TURNS), "row"))
    rows = [
        {"id": 1, "prompt": "", "answer": "", "text": "a plain text that is long enough to be cut"},
        {"id": 2, **chat},
        {"id": 3, "prompt": "2+2=", "answer": "4", "text": "2+2= 4"},
        {"id": 4, "prompt": "| a | b |\n| 1 | 2 |\nsum of row 1:", "answer": "3", "text": ""},
        {"id": 5, "prompt": "2+2=", "answer": "4", "text": "2+2= 4"},
        {"id": 6, "prompt": "", "answer": "an answer without a prompt, long", "text": ""},
        {"id": 7, "prompt": "a very long prompt " * 4, "answer": "a long answer too " * 3, "text": ""},
        {"id": 8, "prompt": "", "answer": "", "text": ""},
        {"id": 9, "prompt": "eos inside </s> the prompt", "answer": "</s>", "text": ""},
    ]
    frame = pd.DataFrame(rows)
    frame["messages"] = frame["messages"].fillna("")
    return frame.fillna("")


@pytest.mark.parametrize("max_length", [512, 40, 12])
@pytest.mark.parametrize("loss_on", ["answer", "sequence"])
def test_chats_tables_and_cut_rows_encode_as_row_by_row(max_length, loss_on):
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = CHATML
    frame = mixed_frame()
    got = encode_frame(tokenizer, frame, "mixed", max_length, loss_on)
    want = reference_frame(tokenizer, frame, "mixed", max_length, loss_on)
    assert asdict(got) == asdict(want)
    if max_length == 12:
        assert got.truncated >= 5 and got.answers_cut >= 3


def test_an_empty_slice_encodes_to_nothing():
    frame = pd.DataFrame({"id": [], "prompt": [], "answer": [], "text": []}, dtype=str)
    got = encode_frame(byte_tokenizer(), frame, "empty", 16)
    assert len(got) == 0 and got.answers == [] and got.truncated == 0
