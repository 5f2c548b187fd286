"""A source's examples checked and split per skill into train, val and test (written as slice
files by ``slicing``).

Splits are per skill and depend only on the skill's own examples, the seed and the skill name,
so adding or removing other skills, or reordering input rows, never changes a skill's split.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from typing import Any

import numpy as np
import pandas as pd

from skillmix.data.sources import COLUMNS, SourceData, require_int, stable_seed
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.slugs import skill_slug

SPLITS: tuple[str, ...] = ("train", "val", "test")

_MAX_NAMED = 5  # offending values listed in an error message

log = logging.getLogger(__name__)


def checked_slugs(skills: list[str], origin: str) -> list[str]:
    """Return the slugs of ``skills``; raise if two different names share a slug."""
    slugs = [skill_slug(skill) for skill in skills]
    owners: dict[str, str] = {}
    for skill, slug in zip(skills, slugs, strict=True):
        if slug in owners and owners[slug] != skill:
            raise SkillmixInputError(
                f"{origin}: skills {owners[slug]!r} and {skill!r} map to the same slug {slug!r}; "
                "rename one of them"
            )
        owners[slug] = skill
    return slugs


def _ids_where(frame: pd.DataFrame, mask: pd.Series) -> list[str]:
    """Return the first few ids of the rows selected by ``mask``."""
    return frame.loc[mask, "id"].head(_MAX_NAMED).tolist()


def validate_examples(data: SourceData) -> None:
    """Check a SourceData for problems any source can have; raise SkillmixInputError on the first.

    Checks: exact columns, no nulls, unique ids, non-empty skills, a non-empty answer for every
    prompt/answer row, non-empty texts, skills listed once each, every listed skill has an
    example, every example's skill is listed, no two skills are one name in two Unicode normal
    forms, and no two skills share a slug.
    """
    frame, origin = data.examples, data.origin
    if list(frame.columns) != COLUMNS:
        raise SkillmixInputError(f"{origin}: expected columns {COLUMNS}, got {list(frame.columns)}")
    for column in COLUMNS:
        if frame[column].isna().any():
            raise SkillmixInputError(
                f"{origin}: column {column!r} has null values, e.g. in rows "
                f"{frame.index[frame[column].isna()][:_MAX_NAMED].tolist()}"
            )
    duplicated = frame["id"][frame["id"].duplicated()].unique()
    if len(duplicated):
        raise SkillmixInputError(
            f"{origin}: {len(duplicated)} duplicated id(s), e.g. {sorted(duplicated)[:_MAX_NAMED]}"
        )
    empty_skill = frame["skill"].str.strip() == ""
    if empty_skill.any():
        raise SkillmixInputError(f"{origin}: empty skill in example(s) {_ids_where(frame, empty_skill)}")
    no_answer = (frame["prompt"] != "") & (frame["answer"].str.strip() == "")
    if no_answer.any():
        raise SkillmixInputError(
            f"{origin}: prompt/answer example(s) {_ids_where(frame, no_answer)} have an empty answer"
        )
    empty_text = frame["text"].str.strip() == ""
    if empty_text.any():
        raise SkillmixInputError(f"{origin}: example(s) {_ids_where(frame, empty_text)} have an empty text")
    listed = pd.Series(data.skills, dtype=object)
    if listed.duplicated().any():
        raise SkillmixInputError(
            f"{origin}: skill(s) listed more than once: {listed[listed.duplicated()].tolist()}"
        )
    present = set(frame["skill"])
    missing = [skill for skill in data.skills if skill not in present]
    if missing:
        raise SkillmixInputError(f"{origin}: skill(s) without examples: {missing[:_MAX_NAMED]}")
    unlisted = sorted(present - set(data.skills))
    if unlisted:
        raise SkillmixInputError(
            f"{origin}: example skill(s) {unlisted[:_MAX_NAMED]} are not in the skill list"
        )
    _same_form_skills(data)
    checked_slugs(data.skills, origin)


def _check_size(value: Any, key: str) -> None:
    """Require a split size: an int >= 1 (a count) or a float in (0, 1) (a fraction)."""
    if isinstance(value, float) and 0 < value < 1:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SkillmixInputError(
            f"config {key}: expected a count (integer >= 1) or a fraction in (0, 1), got {value!r}"
        )


def check_split_args(val: Any, test: Any, seed: Any, max_train: Any) -> None:
    """Validate the split settings, naming the ``split.*`` config key at fault."""
    _check_size(val, "split.val")
    _check_size(test, "split.test")
    require_int(seed, "split.seed", 0)
    if max_train is not None:
        require_int(max_train, "split.max_train", 1)


def _size(value: int | float, n_examples: int) -> int:
    """Return the number of examples a count or fraction asks for (a fraction rounds, >= 1)."""
    if isinstance(value, float):
        return max(1, math.floor(value * n_examples + 0.5))
    return value


def _same_form_skills(data: SourceData) -> None:
    """Refuse skill names that are the same text in two Unicode normal forms (NFC "café" and NFD
    "cafe" + U+0301): they print alike but would become two skills with two slugs."""
    forms: dict[str, list[str]] = {}
    for skill in data.skills:
        forms.setdefault(unicodedata.normalize("NFC", skill), []).append(skill)
    clashes = [names for names in forms.values() if len(names) > 1]
    if not clashes:
        return
    first_ids = data.examples.drop_duplicates("skill").set_index("skill")["id"]
    named = "; ".join(
        " and ".join(f"{ascii(name)} (e.g. example {first_ids.get(name, '?')!r})" for name in names)
        for names in clashes[:_MAX_NAMED]
    )
    raise SkillmixInputError(
        f"{data.origin}: skill names that are the same text in different Unicode normal forms "
        f"(they print alike but would be different skills): {named}; write every skill name in one "
        "form (NFC: unicodedata.normalize('NFC', name)) in the data"
    )


def _content_groups(rows: pd.DataFrame) -> np.ndarray:
    """The group of every row: rows with the same prompt, answer, text and messages share one,
    numbered by first appearance."""
    keys = rows["prompt"] + "\x1f" + rows["answer"] + "\x1f" + rows["text"] + "\x1f" + rows["messages"]
    return pd.factorize(keys.to_numpy(), sort=False)[0]


def _split_skill(
    rows: pd.DataFrame, skill: str, sizes: tuple[int | float, int | float], seed: int, repeats: bool
) -> dict[str, pd.DataFrame]:
    """One skill's rows (sorted by id) permuted and cut into val, test and train (unlimited).

    Repeated examples (same prompt, answer, text and messages) go together to the split of their
    first occurrence in the permuted order, the sizes counting distinct examples; unless
    `repeats` (a source that repeats examples on purpose). Without repeats every row is its own
    group, so the cut is the plain one by rows.
    """
    order = np.random.default_rng([seed, stable_seed(skill)]).permutation(len(rows))
    rows = rows.iloc[order]
    group = np.arange(len(rows)) if repeats else _content_groups(rows)
    n_groups = int(group.max()) + 1 if len(group) else 0
    if n_groups < len(rows):
        log.warning(
            "skill %r: %d example(s) repeat another one (same prompt and answer); each is kept on "
            "the side of the split of its first copy",
            skill,
            len(rows) - n_groups,
        )
    n_val, n_test = _size(sizes[0], n_groups), _size(sizes[1], n_groups)
    side = np.where(group < n_val, 0, np.where(group < n_val + n_test, 1, 2))
    return {split: rows[side == k] for k, split in enumerate(("val", "test", "train"))}


def split_by_skill(
    data: SourceData,
    val: int | float,
    test: int | float,
    seed: int,
    max_train: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Split every skill's examples into train/val/test; validates ``data`` first.

    Per skill, rows are sorted by id and permuted by a generator seeded from ``seed`` and a
    stable hash of the skill name; the first ``val`` rows go to val, the next ``test`` to test,
    the rest (at most ``max_train``) to train. Sizes are counts (int) or fractions in (0, 1).
    Copies of one example (same prompt and answer) stay together on the side of the first copy,
    sizes then counting distinct examples, so no test example is also trained on; a source that
    repeats examples on purpose (``data.repeats``, XOR) is cut by rows.
    Each split frame lists skills in ``data.skills`` order, rows in permuted order.
    """
    check_split_args(val, test, seed, max_train)
    validate_examples(data)
    parts: dict[str, list[pd.DataFrame]] = {split: [] for split in SPLITS}
    groups = dict(tuple(data.examples.groupby("skill", sort=False)))
    for skill in data.skills:
        rows = groups[skill].sort_values("id", kind="stable")
        cut = _split_skill(rows, skill, (val, test), seed, data.repeats)
        for split in ("val", "test", "train"):
            part = cut[split]
            if split == "train" and max_train is not None:
                part = part.iloc[:max_train]
            if part.empty:
                distinct = len(rows) if data.repeats else int(_content_groups(rows).max()) + 1
                copies = (
                    f" (only {distinct} distinct: the copies of an example stay on one side of the split)"
                    if distinct < len(rows)
                    else ""
                )
                raise SkillmixInputError(
                    f"{data.origin}: skill {skill!r} has {len(rows)} examples, too few for "
                    f"val={val} and test={test}: its {split} split would be empty{copies}"
                )
            parts[split].append(part)
    return {split: pd.concat(parts[split], ignore_index=True)[COLUMNS] for split in SPLITS}
