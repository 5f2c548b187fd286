"""Examples written in the formats fine-tuning libraries read as they are.

- messages JSONL: one `{"messages": [{"role", "content"}, ...], "id", "skill"}` per line, the
  conversational format of TRL's SFTTrainer and open-instruct's SFT data. A prompt/answer row
  becomes a user turn and an assistant turn; a plain-text row a single assistant turn.
- prompt/completion JSONL: TRL's prompt-completion format (loss on the completion). Rows are
  strings (`"prompt"`, `"completion"`: what follows the prompt in the example's text) unless the
  selection holds chats; then every row is conversational (`"prompt"`: the turns before the last,
  `"completion"`: the last assistant turn), as one file needs one schema.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pandas as pd

from skillmix.infra.jobs import atomic_file


def _turns(row: dict[str, Any]) -> list[dict[str, str]]:
    """The example as a chat: its own turns, or user prompt + assistant answer, or assistant text."""
    if row.get("messages"):
        return json.loads(row["messages"])
    if row.get("prompt") or row.get("answer"):
        return [
            {"role": "user", "content": str(row.get("prompt") or "")},
            {"role": "assistant", "content": str(row.get("answer") or "")},
        ]
    return [{"role": "assistant", "content": str(row.get("text") or "")}]


def _completion(row: dict[str, Any]) -> tuple[str, str]:
    """(prompt, completion) strings of a non-chat row: the completion is what follows the prompt in
    the example's text (so its separator too), or the answer when the text does not start with it."""
    prompt, answer, text = (str(row.get(k) or "") for k in ("prompt", "answer", "text"))
    if not prompt and not answer:
        return "", text
    if text.startswith(prompt) and text[len(prompt) :].strip() == answer.strip():
        return prompt, text[len(prompt) :]
    return prompt, answer


def messages_records(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """One messages record per row (see the module docstring)."""
    for row in frame.to_dict("records"):
        yield {"messages": _turns(row), "id": str(row["id"]), "skill": str(row["skill"])}


def prompt_completion_records(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """One prompt/completion record per row (see the module docstring)."""
    rows = frame.to_dict("records")
    chat = any(row.get("messages") for row in rows)
    for row in rows:
        if chat:
            turns = _turns(row)
            prompt, completion = turns[:-1], turns[-1:]
        else:
            prompt, completion = _completion(row)
        yield {"prompt": prompt, "completion": completion, "id": str(row["id"]), "skill": str(row["skill"])}


def write_records(records: Iterator[dict[str, Any]], path: str | os.PathLike) -> None:
    """JSON lines, UTF-8; the file appears only when complete."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_training_files(
    frame: pd.DataFrame, messages: str | os.PathLike, prompt_completion: str | os.PathLike
) -> None:
    """The examples of `frame` (slice columns) as messages JSONL and prompt/completion JSONL."""
    write_records(messages_records(frame), messages)
    write_records(prompt_completion_records(frame), prompt_completion)
