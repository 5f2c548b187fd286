"""Target sets of data selection: the examples a selection should help, grouped in subtasks.

A target set comes either from the sliced data (the validation slice of each named skill is
one subtask; that skill's test slice is what the trained models are evaluated on) or from
external files (each file is one subtask: its first examples are the target, the following
ones the evaluation set). Both give two frames with the columns of `TARGET_COLUMNS`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import PreTrainedTokenizerBase

from skillmix.data.slicing import read_slices
from skillmix.data.sources.tables import read_columns
from skillmix.engine.encoding import EncodedSet, encode_frame
from skillmix.infra.errors import SkillmixInputError

TARGET_COLUMNS = ["id", "subtask", "prompt", "answer", "text"]

FILE_DEFAULTS: dict[str, Any] = {
    "path": None,
    "subtask": None,
    "format": "auto",
    "prompt_key": "input",
    "answer_key": "target",
}


def _head(frame: pd.DataFrame, n: int | None) -> pd.DataFrame:
    return frame if n is None else frame.head(int(n))


def targets_from_slices(
    skills: Sequence[str],
    val_paths: Sequence[str | os.PathLike],
    test_paths: Sequence[str | os.PathLike],
    per_subtask: int | None = None,
    eval_per_subtask: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(target, evaluation) frames: each named skill's validation rows, and its test rows.

    `val_paths` / `test_paths` are slice files of any skills; the ones of `skills` are used,
    in the order of `skills`. The first `per_subtask` (`eval_per_subtask`) rows are kept.
    """
    if not skills:
        raise SkillmixInputError("select.target.skills is empty and no target files are given")

    val, test = read_slices(val_paths), read_slices(test_paths)
    missing = [s for s in skills if s not in val]
    if missing:
        known = sorted(set(val) | set(test))
        raise SkillmixInputError(
            f"select.target.skills: {missing} have no validation slice; skills with one are {known}"
        )
    target, evaluation = [], []
    for s in skills:
        for frame, n, out in ((val[s], per_subtask, target), (test.get(s), eval_per_subtask, evaluation)):
            if frame is None:
                continue
            part = _head(frame, n).rename(columns={"skill": "subtask"})
            out.append(part[TARGET_COLUMNS])
    return _checked(pd.concat(target, ignore_index=True), "select.target.skills"), (
        pd.concat(evaluation, ignore_index=True) if evaluation else pd.DataFrame(columns=TARGET_COLUMNS)
    )


def expand_target_files(files: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per file: glob patterns in `path` are expanded (sorted), defaults filled in."""
    out = []
    for k, entry in enumerate(files):
        cfg = {**FILE_DEFAULTS, **entry}
        key = f"select.target.files[{k}]"
        if not cfg["path"]:
            raise SkillmixInputError(f"{key}.path is required")
        pattern = str(cfg["path"])
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths:
            raise SkillmixInputError(f"{key}.path: no file matches {pattern!r}")
        if len(paths) > 1 and cfg["subtask"]:
            raise SkillmixInputError(
                f"{key}.subtask names one subtask, but {pattern!r} matches {len(paths)} files "
                "(each file is its own subtask, named after the file)"
            )
        for p in paths:
            if not Path(p).is_file():
                raise SkillmixInputError(f"{key}.path: {p} does not exist")
            out.append({**cfg, "path": p, "subtask": cfg["subtask"] or Path(p).name.split(".")[0]})
    names = [e["subtask"] for e in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SkillmixInputError(f"select.target.files: subtask names {dup} occur more than once")
    return out


def targets_from_files(
    files: Sequence[dict[str, Any]], per_subtask: int | None = 3, eval_per_subtask: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(target, evaluation) frames from external files, one subtask per file.

    Each file's first `per_subtask` rows are target examples and the next `eval_per_subtask`
    (all the rest when None) are evaluation examples. Ids are `<subtask>/<row>`.
    """
    target, evaluation = [], []
    for entry in expand_target_files(files):
        path, subtask = entry["path"], entry["subtask"]
        columns = read_columns(path, entry["format"])
        if not columns or not any(len(v) for v in columns.values()):
            raise SkillmixInputError(f"{path}: the target file has no rows (select.target.files)")
        for key in ("prompt_key", "answer_key"):
            if entry[key] not in columns:
                raise SkillmixInputError(
                    f"{path}: no column {entry[key]!r} (select.target.files {key}); columns are "
                    f"{sorted(columns)}"
                )
        prompts = ["" if v is None else str(v) for v in columns[entry["prompt_key"]]]
        answers = ["" if v is None else str(v) for v in columns[entry["answer_key"]]]
        empty = [i for i, a in enumerate(answers) if not a.strip()]
        if empty:
            raise SkillmixInputError(f"{path}: rows {empty[:5]} have an empty answer ({entry['answer_key']})")
        frame = pd.DataFrame(
            {
                "id": [f"{subtask}/{i}" for i in range(len(prompts))],
                "subtask": subtask,
                "prompt": prompts,
                "answer": answers,
                "text": "",
            }
        )
        n = len(frame) if per_subtask is None else int(per_subtask)
        target.append(frame.iloc[:n])
        rest = frame.iloc[n:]
        evaluation.append(_head(rest, eval_per_subtask))
    if not target:
        raise SkillmixInputError("select.target.files is empty")
    return _checked(pd.concat(target, ignore_index=True), "select.target.files"), pd.concat(
        evaluation, ignore_index=True
    )


def _checked(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    if frame.empty:
        raise SkillmixInputError(f"{key}: the target set has no examples")
    return frame.reset_index(drop=True)


def build_targets(
    target_cfg: dict[str, Any],
    val_paths: Sequence[str | os.PathLike] = (),
    test_paths: Sequence[str | os.PathLike] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (target, evaluation) frames the `select.target` config block describes.

    Files take precedence when given; else the named skills' slices are used.
    """
    per = target_cfg.get("examples_per_subtask")
    per_eval = target_cfg.get("eval_examples_per_subtask")
    if target_cfg.get("files"):
        return targets_from_files(target_cfg["files"], 3 if per is None else per, per_eval)
    return targets_from_slices(target_cfg.get("skills") or [], val_paths, test_paths, per, per_eval)


def first_per_subtask(frame: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The first `limit` rows of every subtask (all rows when limit is None)."""
    return frame if limit is None else frame.groupby("subtask", sort=False).head(limit)


def subtask_sets(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The frame split by subtask, in order of first appearance."""
    return [(str(s), frame[frame["subtask"] == s]) for s in dict.fromkeys(frame["subtask"])]


def encode_groups(
    tokenizer: PreTrainedTokenizerBase, frame: pd.DataFrame, column: str, max_length: int
) -> list[EncodedSet]:
    """One encoded set per value of `column` (skill or subtask), in order of first appearance."""
    renamed = frame.rename(columns={column: "subtask"}) if column != "subtask" else frame
    return [encode_frame(tokenizer, part, name, max_length) for name, part in subtask_sets(renamed)]
