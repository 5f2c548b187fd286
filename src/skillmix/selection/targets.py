"""Target sets of data selection: the examples a selection should help, grouped in skills.

A target set comes either from the sliced data (the validation slice of each named skill is
one skill; that skill's test slice is what the trained models are evaluated on) or from
external files (each file is one skill: its first examples are the target, the following
ones the evaluation set). Both give two frames with the columns of `COLUMNS`.
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
from skillmix.data.sources import COLUMNS
from skillmix.data.sources.tables import read_columns
from skillmix.engine.encoding import EncodedSet, encode_frame
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError


def _head(frame: pd.DataFrame, n: int | None) -> pd.DataFrame:
    return frame if n is None else frame.head(int(n))


def targets_from_slices(
    skills: Sequence[str],
    val_paths: Sequence[str | os.PathLike],
    test_paths: Sequence[str | os.PathLike],
    per_skill: int | None = None,
    eval_per_skill: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(target, evaluation) frames: each named skill's validation rows, and its test rows.

    `val_paths` / `test_paths` are slice files of any skills; the ones of `skills` are used,
    in the order of `skills`. The first `per_skill` (`eval_per_skill`) rows are kept.
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
        for frame, n, out in ((val[s], per_skill, target), (test.get(s), eval_per_skill, evaluation)):
            if frame is None:
                continue
            part = _head(frame, n)
            out.append(part[COLUMNS])
    return _checked(pd.concat(target, ignore_index=True), "select.target.skills"), (
        pd.concat(evaluation, ignore_index=True) if evaluation else pd.DataFrame(columns=COLUMNS)
    )


def expand_target_files(files: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per file: glob patterns in `path` are expanded (sorted), defaults filled in."""
    out = []
    for k, entry in enumerate(files):
        key = f"select.target.files[{k}]"
        if not isinstance(entry, dict) or not entry.get("path"):
            raise SkillmixInputError(f"{key}.path is required")
        cfg = complete("select.target.files[]", entry, key)
        pattern = str(cfg["path"])
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths:
            raise SkillmixInputError(f"{key}.path: no file matches {pattern!r}")
        if len(paths) > 1 and cfg["skill"]:
            raise SkillmixInputError(
                f"{key}.skill names one skill, but {pattern!r} matches {len(paths)} files "
                "(each file is its own skill, named after the file)"
            )
        for p in paths:
            if not Path(p).is_file():
                raise SkillmixInputError(f"{key}.path: {p} does not exist")
            out.append({**cfg, "path": p, "skill": cfg["skill"] or Path(p).name.split(".")[0]})
    names = [e["skill"] for e in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SkillmixInputError(f"select.target.files: skill names {dup} occur more than once")
    return out


def targets_from_files(
    files: Sequence[dict[str, Any]], per_skill: int | None = 3, eval_per_skill: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(target, evaluation) frames from external files, one skill per file.

    Each file's first `per_skill` rows are target examples and the next `eval_per_skill`
    (all the rest when None) are evaluation examples. Ids are `<skill>/<row>`.
    """
    target, evaluation = [], []
    for entry in expand_target_files(files):
        path, skill = entry["path"], entry["skill"]
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
                "id": [f"{skill}/{i}" for i in range(len(prompts))],
                "skill": skill,
                "prompt": prompts,
                "answer": answers,
                "text": "",
                "messages": "",
            }
        )
        n = len(frame) if per_skill is None else int(per_skill)
        target.append(frame.iloc[:n])
        rest = frame.iloc[n:]
        evaluation.append(_head(rest, eval_per_skill))
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
    per = target_cfg.get("examples_per_skill")
    per_eval = target_cfg.get("eval_examples_per_skill")
    if target_cfg.get("files"):
        return targets_from_files(target_cfg["files"], 3 if per is None else per, per_eval)
    return targets_from_slices(target_cfg.get("skills") or [], val_paths, test_paths, per, per_eval)


def first_per_skill(frame: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The first `limit` rows of every skill (all rows when limit is None)."""
    return frame if limit is None else frame.groupby("skill", sort=False).head(limit)


def skill_sets(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The frame split by skill, in order of first appearance."""
    return [(str(s), frame[frame["skill"] == s]) for s in dict.fromkeys(frame["skill"])]


def encode_skills(
    tokenizer: PreTrainedTokenizerBase, frame: pd.DataFrame, max_length: int
) -> list[EncodedSet]:
    """One encoded set per skill of the frame, in order of first appearance."""
    return [encode_frame(tokenizer, part, name, max_length) for name, part in skill_sets(frame)]
