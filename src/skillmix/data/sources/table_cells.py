"""A read table's configured columns, checked cell by cell, turned into a source's examples.

Cells are checked strictly: the skill, id, text, prompt and answer columns hold strings or numbers
(never lists, dicts or bytes), the skill column one kind of the two, and skill names that differ
only by letter case or surrounding whitespace stop the load unless ``merge_skill_names`` is set.
The files are read in ``tables``.
"""

from __future__ import annotations

import datetime
import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from skillmix.data.chat import chat_fields, parse_messages
from skillmix.data.sources import SourceData, examples_frame
from skillmix.infra.errors import SkillmixInputError

Columns = dict[str, list[Any]]
"""A read table: column name -> the column's cells, in row order."""

_MAX_NAMED = 5  # offending values listed in an error message
_SCALARS = (str, numbers.Number, np.bool_, np.datetime64, np.timedelta64, datetime.date, datetime.time)


def _is_missing(value: Any) -> bool:
    """Return True for None and NaN cells."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _as_text(value: Any) -> str:
    """Return a non-missing cell as a string (missing cells become the empty string)."""
    return "" if _is_missing(value) else str(value)


def _column(columns: Columns, cfg: dict[str, Any], key: str, origin: str) -> list[Any]:
    """Return the column named by config ``key``; raise listing the available columns."""
    name = cfg[key]
    if name not in columns:
        raise SkillmixInputError(
            f"{origin}: column {name!r} (source.table.{key}) not found; available columns: {list(columns)}"
        )
    return columns[name]


def _row_ids(id_values: list[Any] | None, cfg: dict[str, Any], n_rows: int, origin: str) -> list[str]:
    """Return the row ids: the id column as strings, or ``row-<index>`` zero-padded."""
    if id_values is None:
        width = max(6, len(str(n_rows - 1)))
        return [f"row-{index:0{width}d}" for index in range(n_rows)]
    ids = [_as_text(value) for value in id_values]
    empty = [index for index, value in enumerate(ids) if not value.strip()]
    if empty:
        raise SkillmixInputError(
            f"{origin}: column {cfg['id_column']!r} (source.table.id_column) is empty or null "
            f"in row(s) {empty[:_MAX_NAMED]}"
        )
    counts = pd.Series(ids).value_counts()
    duplicated = counts[counts > 1].index.tolist()
    if duplicated:
        raise SkillmixInputError(
            f"{origin}: column {cfg['id_column']!r} (source.table.id_column) has "
            f"{len(duplicated)} duplicated id(s), e.g. {sorted(duplicated)[:_MAX_NAMED]}"
        )
    return ids


def check_column_config(cfg: dict[str, Any], origin: str) -> None:
    """Require one of ``text_column``, ``messages_column``, or ``prompt_column`` with ``answer_column``."""
    if cfg["messages_column"] is not None:
        others = [k for k in ("text_column", "prompt_column", "answer_column") if cfg[k] is not None]
        if others:
            raise SkillmixInputError(
                f"{origin}: config source.table sets messages_column and {', '.join(others)}; "
                "a chat table gives messages_column only"
            )
        return
    has_text = cfg["text_column"] is not None
    has_prompt = cfg["prompt_column"] is not None
    has_answer = cfg["answer_column"] is not None
    if has_text and (has_prompt or has_answer):
        raise SkillmixInputError(
            f"{origin}: config source.table sets both text_column and prompt_column/answer_column; "
            "give either text_column (plain text) or prompt_column + answer_column"
        )
    if not has_text and not (has_prompt and has_answer):
        raise SkillmixInputError(
            f"{origin}: config source.table needs either text_column (plain text) or both "
            f"prompt_column and answer_column; got prompt_column={cfg['prompt_column']!r}, "
            f"answer_column={cfg['answer_column']!r}"
        )


def _kind(value: Any) -> str:
    """The type of a cell value as an error message names it, e.g. "a list"."""
    if isinstance(value, np.ndarray):
        return "a numpy array"
    if isinstance(value, bytes):
        return "bytes"
    name = type(value).__name__
    return f"an {name}" if name[0].lower() in "aeiou" else f"a {name}"


def _check_cells(
    values: list[Any], key: str, cfg: dict[str, Any], origin: str, ids: list[str] | None
) -> None:
    """Reject a cell of column ``key`` that is not a string, number or other scalar (a list, dict,
    bytes, array...); rows are named by ``ids``, or by index when None."""
    expected = "a string or a number" if key in ("skill_column", "id_column") else "text"
    for index, value in enumerate(values):
        if not (_is_missing(value) or isinstance(value, _SCALARS)):
            row = ids[index] if ids is not None else f"{index} (0-based)"
            raise SkillmixInputError(
                f"{origin}: column {cfg[key]!r} (source.table.{key}) holds {_kind(value)} in row {row}; "
                f"expected {expected}"
            )


def _check_skill_types(values: list[Any], ids: list[str], cfg: dict[str, Any], origin: str) -> None:
    """Reject a skill column mixing strings with numbers (skill 1 and skill "1" would become one)."""
    first: dict[bool, tuple[str, Any]] = {}
    for row_id, value in zip(ids, values, strict=True):
        if not _is_missing(value):
            first.setdefault(isinstance(value, str), (row_id, value))
            if len(first) == 2:
                (text_id, text), (other_id, other) = first[True], first[False]
                raise SkillmixInputError(
                    f"{origin}: column {cfg['skill_column']!r} (source.table.skill_column) holds both "
                    f"{type(other).__name__} and str skills (row {other_id}: {other!r}; row {text_id}: "
                    f"{text!r}); give every skill as a string, or every skill as a number"
                )


def _merged_skill_names(skills: list[str], ids: list[str], cfg: dict[str, Any], origin: str) -> list[str]:
    """The skills, with names that differ only by letter case or surrounding whitespace made one
    (named by the first spelling in the file, stripped) if ``merge_skill_names``; else raise naming them."""
    spellings: dict[str, dict[str, str]] = {}  # folded name -> spelling -> first row id
    for row_id, skill in zip(ids, skills, strict=True):
        spellings.setdefault(skill.strip().casefold(), {}).setdefault(skill, row_id)
    clashes = [group for group in spellings.values() if len(group) > 1]
    if not clashes:
        return skills
    if not cfg["merge_skill_names"]:
        named = "; ".join(
            ", ".join(f"{name!r} (row {row_id})" for name, row_id in list(group.items())[:_MAX_NAMED])
            for group in clashes[:_MAX_NAMED]
        )
        raise SkillmixInputError(
            f"{origin}: column {cfg['skill_column']!r} (source.table.skill_column) has skill names that "
            f"differ only by letter case or surrounding whitespace: {named}; set "
            "source.table.merge_skill_names: true to make each group one skill, or fix the data"
        )
    rename = {name: next(iter(group)).strip() for group in clashes for name in group}
    return [rename.get(skill, skill) for skill in skills]


def _skills(values: list[Any], ids: list[str], cfg: dict[str, Any], origin: str) -> list[str]:
    """The checked skill of each row, as a string."""
    _check_skill_types(values, ids, cfg, origin)
    skills = [_as_text(value) for value in values]
    for row_id, skill in zip(ids, skills, strict=True):
        if not skill.strip():
            raise SkillmixInputError(
                f"{origin}: row {row_id} has an empty or null skill in column "
                f"{cfg['skill_column']!r} (source.table.skill_column)"
            )
    return _merged_skill_names(skills, ids, cfg, origin)


def build_source(columns: Columns, cfg: dict[str, Any], origin: str) -> SourceData:
    """Validate the configured columns of a read table and turn its rows into a SourceData."""
    keys = ["skill_column", "id_column", "text_column", "prompt_column", "answer_column", "messages_column"]
    values = {key: _column(columns, cfg, key, origin) for key in keys if cfg[key] is not None}
    n_rows = len(values["skill_column"])
    if n_rows == 0:
        raise SkillmixInputError(f"{origin}: the table has no rows")
    if "id_column" in values:
        _check_cells(values["id_column"], "id_column", cfg, origin, None)
    ids = _row_ids(values.get("id_column"), cfg, n_rows, origin)
    for key in ("skill_column", "text_column", "prompt_column", "answer_column"):
        if key in values:
            _check_cells(values[key], key, cfg, origin, ids)
    skills = _skills(values["skill_column"], ids, cfg, origin)
    chats = [""] * n_rows
    if "messages_column" in values:
        fields = [
            chat_fields(parse_messages(value, f"{origin}: row {row_id}, column {cfg['messages_column']!r}"))
            for row_id, value in zip(ids, values["messages_column"], strict=True)
        ]
        prompts, answers, texts, chats = (
            [f[k] for f in fields] for k in ("prompt", "answer", "text", "messages")
        )
        empty = [row_id for row_id, a in zip(ids, answers, strict=True) if not a.strip()]
        if empty:
            raise SkillmixInputError(
                f"{origin}: row(s) {empty[:_MAX_NAMED]} end with an empty assistant turn in column "
                f"{cfg['messages_column']!r} (source.table.messages_column)"
            )
    elif "text_column" in values:
        texts = [_as_text(value) for value in values["text_column"]]
        for row_id, skill, text in zip(ids, skills, texts, strict=True):
            if not text.strip():
                raise SkillmixInputError(
                    f"{origin}: row {row_id} (skill {skill!r}) has an empty or null text in column "
                    f"{cfg['text_column']!r} (source.table.text_column)"
                )
        prompts = [""] * n_rows
        answers = [""] * n_rows
    else:
        prompts = [_as_text(value) for value in values["prompt_column"]]
        answers = [_as_text(value) for value in values["answer_column"]]
        for row_id, skill, prompt, answer in zip(ids, skills, prompts, answers, strict=True):
            for key, value in (("prompt_column", prompt), ("answer_column", answer)):
                if not value.strip():
                    raise SkillmixInputError(
                        f"{origin}: row {row_id} (skill {skill!r}) has an empty or null "
                        f"{key.split('_')[0]} in column {cfg[key]!r} (source.table.{key})"
                    )
        texts = [f"{prompt} {answer}" for prompt, answer in zip(prompts, answers, strict=True)]
    examples = examples_frame(
        {"id": ids, "skill": skills, "prompt": prompts, "answer": answers, "text": texts, "messages": chats}
    )
    return SourceData(examples=examples, skills=sorted(set(skills)), origin=origin)
