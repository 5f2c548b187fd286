"""Natural-Instructions tasks as a source: one skill per NI category (or per task).

A CSV lists the task files to use and maps each to a category. Each task file is NI JSON
(plain ``.json`` or ``.json.gz``) with ``Definition`` (a string or a list of strings),
``Positive Examples`` (``{input, output, explanation}``) and ``Instances``
(``{input, output: [str, ...]}``); bytes that are not UTF-8 and truncated ``.gz`` files are
reported with their file and line. An instance becomes::

    prompt: "<Definition>\\n\\n" + "Input: <demo input>\\nOutput: <demo output>\\n\\n" * n_demos
            + "Input: <instance input>\\nOutput:"
    answer: the first output, stripped

With ``chat: true`` an instance is a chat instead: one user turn (the prompt above without the
final "Output:") and one assistant turn (the answer), encoded with the tokenizer's chat template.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skillmix.data.chat import chat_fields
from skillmix.data.sources import (
    SourceData,
    examples_frame,
    require_int,
    resolve_path,
    stable_seed,
)
from skillmix.data.sources.tables import READ_ERRORS, read_error
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError

TASK_SUFFIXES: tuple[str, ...] = (".json.gz", ".json")


def task_name(file_name: str) -> str:
    """Return the task name of an NI task file name: the name without ``.json``/``.json.gz``."""
    for suffix in TASK_SUFFIXES:
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    raise SkillmixInputError(f"NI task file {file_name!r}: expected a name ending in .json or .json.gz")


def read_ni_task(path: Path, n_demonstrations: int = 0) -> dict[str, Any]:
    """Read an NI task file and check the keys this loader needs; raise naming file and key."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            task = json.load(handle)
    except json.JSONDecodeError as exc:
        raise SkillmixInputError(f"{path}: not a valid NI JSON task file ({exc})") from exc
    except READ_ERRORS as exc:
        raise read_error(path, exc) from exc
    if not isinstance(task, dict):
        raise SkillmixInputError(f"{path}: expected a JSON object (NI task), got {type(task).__name__}")
    required = ["Definition", "Instances"] + (["Positive Examples"] if n_demonstrations else [])
    for key in required:
        if key not in task:
            raise SkillmixInputError(f"{path}: not valid NI JSON, missing key {key!r}")
        if key != "Definition" and not isinstance(task[key], list):
            raise SkillmixInputError(f"{path}: NI key {key!r} must be a list")
    return task


def _definition(task: dict[str, Any], path: Path) -> str:
    """Return the task definition as one string (a list of strings is joined by newlines)."""
    value = task["Definition"]
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        value = "\n".join(value)
    if not isinstance(value, str):
        raise SkillmixInputError(f"{path}: NI key 'Definition' must be a string or a list of strings")
    return value.strip()


def _demonstrations(task: dict[str, Any], n_demonstrations: int, path: Path) -> str:
    """Return the first ``n_demonstrations`` positive examples formatted as Input/Output pairs."""
    examples = task.get("Positive Examples", [])[:n_demonstrations]
    if len(examples) < n_demonstrations:
        raise SkillmixInputError(
            f"{path}: has {len(examples)} 'Positive Examples', fewer than "
            f"source.natural_instructions.n_demonstrations={n_demonstrations}"
        )
    parts = []
    for index, example in enumerate(examples):
        if not (
            isinstance(example, dict)
            and isinstance(example.get("input"), str)
            and isinstance(example.get("output"), str)
        ):
            raise SkillmixInputError(
                f"{path}: 'Positive Examples'[{index}] must have string 'input' and 'output'"
            )
        parts.append(f"Input: {example['input']}\nOutput: {example['output']}\n\n")
    return "".join(parts)


def _instance(task: dict[str, Any], index: int, path: Path) -> tuple[str, str]:
    """Return (input, stripped first output) of instance ``index``; raise naming file and key."""
    instance = task["Instances"][index]
    if not isinstance(instance, dict):
        raise SkillmixInputError(f"{path}: 'Instances'[{index}] must be a JSON object")
    for key in ("input", "output"):
        if key not in instance:
            raise SkillmixInputError(f"{path}: not valid NI JSON, 'Instances'[{index}] misses key {key!r}")
    outputs = instance["output"]
    if not isinstance(instance["input"], str):
        raise SkillmixInputError(f"{path}: 'Instances'[{index}]['input'] must be a string")
    if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], str):
        raise SkillmixInputError(
            f"{path}: 'Instances'[{index}]['output'] must be a non-empty list of strings"
        )
    answer = outputs[0].strip()
    if not answer:
        raise SkillmixInputError(f"{path}: 'Instances'[{index}]['output'][0] is empty")
    return instance["input"], answer


def _kept_indices(n_instances: int, max_per_task: int | None, seed: int, task: str) -> list[int]:
    """Return the sorted instance indices kept: all, or a subset seeded by (seed, task)."""
    if max_per_task is None or n_instances <= max_per_task:
        return list(range(n_instances))
    rng = np.random.default_rng([seed, stable_seed(task)])
    return sorted(rng.choice(n_instances, size=max_per_task, replace=False).tolist())


def _read_task_table(cfg: dict[str, Any], csv_path: Path, tasks_dir: Path) -> list[tuple[Path, str]]:
    """Read the categories CSV; return (task file path, category) per row, all files existing."""
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SkillmixInputError(f"{csv_path}: not a readable CSV file ({exc})") from exc
    except READ_ERRORS as exc:
        raise read_error(csv_path, exc) from exc
    needed = ["file_column"] + (["category_column"] if cfg["skill"] == "category" else [])
    for key in needed:
        if cfg[key] not in table.columns:
            raise SkillmixInputError(
                f"{csv_path}: column {cfg[key]!r} (source.natural_instructions.{key}) not found; "
                f"available columns: {list(table.columns)}"
            )
    if table.empty:
        raise SkillmixInputError(f"{csv_path}: lists no task files")
    files = table[cfg["file_column"]].str.strip().tolist()
    if cfg["skill"] == "category":
        categories = table[cfg["category_column"]].str.strip().tolist()
    else:
        categories = [""] * len(files)
    rows = []
    for line, (file_name, category) in enumerate(zip(files, categories, strict=True), start=2):
        if not file_name:
            raise SkillmixInputError(f"{csv_path}: line {line} has an empty {cfg['file_column']!r}")
        if cfg["skill"] == "category" and not category:
            raise SkillmixInputError(
                f"{csv_path}: line {line} ({file_name}) has an empty {cfg['category_column']!r}"
            )
        task_name(file_name)
        rows.append((tasks_dir / file_name, category))
    duplicated = sorted(name for name, count in Counter(files).items() if count > 1)
    if duplicated:
        raise SkillmixInputError(f"{csv_path}: task file(s) listed more than once: {duplicated[:5]}")
    missing = [str(path) for path, _ in rows if not path.is_file()]
    if missing:
        raise SkillmixInputError(
            f"{csv_path}: {len(missing)} listed task file(s) do not exist, e.g. {missing[:5]}"
        )
    return rows


def load_natural_instructions(
    cfg: dict[str, Any] | None, base_dir: str | Path | None = None, *, seed: int = 0
) -> SourceData:
    """Load the NI tasks listed in a categories CSV, per the ``source.natural_instructions`` block.

    Each task keeps at most ``max_per_task`` instances (a random subset seeded by ``seed`` and
    the task name, in original order). Ids are ``{task}-{instance index:06d}``; skills are the
    sorted categories (or task names with ``skill: task``).
    """
    cfg = complete("source.natural_instructions", cfg)
    require_int(seed, "source.seed", 0)
    tasks_dir = resolve_path(cfg["tasks_dir"], "source.natural_instructions.tasks_dir", base_dir)
    if not tasks_dir.is_dir():
        raise SkillmixInputError(
            f"config source.natural_instructions.tasks_dir: directory {tasks_dir} does not exist"
        )
    csv_path = resolve_path(cfg["categories_csv"], "source.natural_instructions.categories_csv", base_dir)
    if not csv_path.is_file():
        raise SkillmixInputError(
            f"config source.natural_instructions.categories_csv: file {csv_path} does not exist"
        )
    if cfg["max_per_task"] is not None:
        require_int(cfg["max_per_task"], "source.natural_instructions.max_per_task", 1)
    if not isinstance(cfg["include_definition"], bool):
        raise SkillmixInputError(
            "config source.natural_instructions.include_definition: expected true or false, "
            f"got {cfg['include_definition']!r}"
        )
    n_demos = require_int(cfg["n_demonstrations"], "source.natural_instructions.n_demonstrations", 0)

    records: dict[str, list[str]] = {k: [] for k in ("id", "skill", "prompt", "answer", "text", "messages")}
    for path, category in _read_task_table(cfg, csv_path, tasks_dir):
        name = task_name(path.name)
        task = read_ni_task(path, n_demos)
        if not task["Instances"]:
            raise SkillmixInputError(f"{path}: 'Instances' is empty")
        header = (_definition(task, path) + "\n\n" if cfg["include_definition"] else "") + (
            _demonstrations(task, n_demos, path)
        )
        skill = category if cfg["skill"] == "category" else name
        for index in _kept_indices(len(task["Instances"]), cfg["max_per_task"], seed, name):
            instance_input, answer = _instance(task, index, path)
            if cfg["chat"]:
                turns = [
                    {"role": "user", "content": f"{header}Input: {instance_input}"},
                    {"role": "assistant", "content": answer},
                ]
                fields = chat_fields(turns)
            else:
                prompt = f"{header}Input: {instance_input}\nOutput:"
                fields = {"prompt": prompt, "answer": answer, "text": f"{prompt} {answer}", "messages": ""}
            records["id"].append(f"{name}-{index:06d}")
            records["skill"].append(skill)
            for key, value in fields.items():
                records[key].append(value)
    return SourceData(
        examples=examples_frame(records),
        skills=sorted(set(records["skill"])),
        origin=f"{csv_path} (tasks in {tasks_dir})",
    )
