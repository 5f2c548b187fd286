"""Chat examples: a list of {role, content} turns, stored in a slice's `messages` column as JSON.

A chat row keeps its last user turn as `prompt` and its last (assistant) turn as `answer`, so the
answer-scoring and composition reports read it like a prompt/answer row; training and gradients
encode the whole chat with the tokenizer's chat template (`skillmix.engine.encoding`).
"""

from __future__ import annotations

import json
from typing import Any

from skillmix.infra.errors import SkillmixInputError

ROLES = ("system", "user", "assistant")


def parse_messages(value: Any, where: str) -> list[dict[str, str]]:
    """A chat as a list of {role, content} turns (from a list or its JSON text), checked: roles
    system/user/assistant, string contents, at least one assistant turn, the last turn the assistant's."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SkillmixInputError(f"{where}: messages are not valid JSON ({exc})") from exc
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise SkillmixInputError(f"{where}: messages must be a non-empty list of {{role, content}} turns")
    turns = []
    for k, turn in enumerate(value):
        if not isinstance(turn, dict) or set(turn) - {"role", "content"} or "role" not in turn:
            raise SkillmixInputError(
                f"{where}: turn {k} must be an object with role and content, got {turn!r:.80}"
            )
        role, content = turn["role"], turn.get("content")
        if role not in ROLES:
            raise SkillmixInputError(f"{where}: turn {k} has role {role!r}, expected one of {ROLES}")
        if not isinstance(content, str):
            raise SkillmixInputError(
                f"{where}: turn {k} content must be a string, got {type(content).__name__}"
            )
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != "assistant":
        raise SkillmixInputError(f"{where}: the last turn must be the assistant's (it is the answer)")
    return turns


def chat_fields(turns: list[dict[str, str]]) -> dict[str, str]:
    """The prompt, answer, text and messages cells of a checked chat."""
    users = [t["content"] for t in turns[:-1] if t["role"] == "user"]
    prompt = users[-1] if users else ""
    answer = turns[-1]["content"]
    return {
        "prompt": prompt,
        "answer": answer,
        "text": f"{prompt} {answer}",
        "messages": json.dumps(turns, ensure_ascii=False),
    }
