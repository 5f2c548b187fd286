"""Checks of the config against the sliced skills, and the count of answers max_length cuts."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pandas as pd
import pytest
import yaml
from workflow_helpers import MAIN_CONFIG

from skillmix.data.sources import examples_frame
from skillmix.engine.tokenizers import byte_tokenizer
from skillmix.infra.config import validate_config
from skillmix.infra.errors import SkillmixInputError
from skillmix.preflight import check_against_skills, check_cut_answers, count_cut_answers

SKILLS = ["alpha", "beta", "gamma"]
MANIFEST = {"skills": [{"name": s, "counts": {"train": 40, "val": 5, "test": 5}} for s in SKILLS]}


def config(**blocks: Any) -> dict[str, Any]:
    """The default config with `blocks` merged over it (one level deep), defaults filled."""
    cfg = yaml.safe_load(MAIN_CONFIG.read_text())
    for key, block in blocks.items():
        cfg[key] = {**cfg.get(key, {}), **block}
    cfg = copy.deepcopy(cfg)
    validate_config(cfg)
    return cfg


def test_a_valid_config_passes() -> None:
    check_against_skills(
        config(
            train={"skills": ["alpha", "beta"], "target_skills": ["gamma"], "strategies": ["skillit"]},
            skillit={"prior": [1.0, 2.0]},
            select={"enabled": True, "target": {"skills": ["gamma"]}, "selection": {"k": 119}},
            kernel={"enabled": True, "skills": ["beta"]},
        ),
        MANIFEST,
    )


@pytest.mark.parametrize(
    ("blocks", "words"),
    [
        (
            {"train": {"skills": ["alpha", "qq"]}},
            "config train.skills: 'qq' is not a skill of the data",
        ),
        ({"train": {"target_skills": ["Gamma"]}}, "'Gamma' (did you mean 'gamma'?) is not a skill"),
        (
            {"train": {"strategies": ["skillit"]}, "skillit": {"prior": [1.0, 2.0]}},
            "config skillit.prior: 2 weights, but there are 3 training skills",
        ),
        (
            {"select": {"enabled": True, "target": {"skills": ["gama"]}}},
            "config select.target.skills: 'gama' (did you mean 'gamma'?)",
        ),
        (
            {"select": {"enabled": True, "target": {"skills": ["beta"]}, "pool": {"skills": ["qq"]}}},
            "config select.pool.skills: 'qq' is not a skill",
        ),
        (
            {"select": {"enabled": True, "target": {"skills": ["beta"]}, "selection": {"k": 120}}},
            "config select.selection.k: 120 is not smaller than the candidate pool (120 training examples)",
        ),
        ({"kernel": {"enabled": True, "skills": ["omega"]}}, "config kernel.skills: 'omega' is not a skill"),
    ],
)
def test_a_wrong_name_or_size_is_named_by_its_key(blocks: dict, words: str) -> None:
    with pytest.raises(SkillmixInputError) as caught:
        check_against_skills(config(**blocks), MANIFEST)
    assert words in str(caught.value)


def frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return examples_frame(
        {
            "id": [f"r{i}" for i in range(len(rows))],
            "skill": [r[0] for r in rows],
            "prompt": [r[1] for r in rows],
            "answer": [r[2] for r in rows],
            "text": [f"{r[1]} {r[2]}" for r in rows],
        }
    )


def test_cut_answers_are_counted_warned_about_and_refused_above_the_share(caplog) -> None:
    huge = "x" * 1_000_000  # a 1 MB answer: never scored as correct at 64 tokens
    splits = {
        "train": frame([("a", "long prompt " * 50, "yes"), ("a", "q", huge), ("b", "q", "no")]),
        "val": frame([("b", "q", "no " * 40)]),
    }
    counts = count_cut_answers(byte_tokenizer(), splits, ["a", "b"], 64)
    # a long prompt loses its start, which is no cut answer; the huge and the 120-byte answers are cut
    assert counts == {"a": {"cut": 1, "examples": 2}, "b": {"cut": 1, "examples": 2}}
    with caplog.at_level(logging.WARNING, logger="skillmix"):
        check_cut_answers(counts, 64, max_share=0.5)
    assert "model.max_length 64 cuts the answer of 2 of 4 examples (50.0%)" in caplog.text
    with pytest.raises(
        SkillmixInputError, match=r"config model.max_length: .* above model.max_cut_share \(20.0%\)"
    ):
        check_cut_answers(counts, 64, max_share=0.2)
    check_cut_answers({"a": {"cut": 0, "examples": 3}}, 64, max_share=0.0)  # nothing cut: silent


@pytest.mark.parametrize(
    ("blocks", "words"),
    [
        (  # 4 sweeps × 3 skills × 4 steps = 48 parameter-learning steps in a round of 20
            {"train": {"strategies": ["aioli"], "update_steps": 20, "steps": 40}},
            ["train.update_steps = 20", "aioli.lp_rounds"],
        ),
        (
            {
                "train": {"strategies": ["aioli"], "update_steps": 100, "steps": 150},
                "aioli": {"lp_rounds": 1, "lp_steps": 1},
            },
            ["train.steps", "multiple of train.update_steps"],
        ),  # fmt: skip
        (
            {"train": {"strategies": ["odm"], "steps": 10}, "odm": {"warmup": 10}},
            ["odm.warmup"],
        ),
    ],
    ids=["aioli-round-too-short", "aioli-partial-round", "odm-warmup-whole-run"],
)
def test_mixer_settings_that_cannot_run_on_these_skills_stop_before_training(blocks, words) -> None:
    """The strategies that need only the config and the skills are built ahead, so their setup
    checks run in the slice job and at DAG time, not in a train job."""
    with pytest.raises(SkillmixInputError) as error:
        check_against_skills(config(**blocks), MANIFEST)
    for word in words:
        assert word in str(error.value)
