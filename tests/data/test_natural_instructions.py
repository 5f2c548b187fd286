"""Tests of the Natural-Instructions source: prompts, subsampling, bad input, the shared subset, chats."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from test_sources import assert_data_model

from skillmix.data.sources import load_source
from skillmix.data.sources.natural_instructions import load_natural_instructions
from skillmix.infra.errors import SkillmixInputError

SHARED_DATA = Path(
    os.environ.get("SKILLMIX_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
NI_SUBSET = SHARED_DATA / "ni_task_subset"


def ni_task(definition: object, n_instances: int, prefix: str) -> dict:
    """Return an NI task dict with two positive examples and ``n_instances`` instances."""
    return {
        "Definition": definition,
        "Positive Examples": [
            {"input": f"{prefix} demo {i}", "output": f"demo answer {i}", "explanation": "."}
            for i in range(2)
        ],
        "Negative Examples": [],
        "Instances": [
            {"input": f"{prefix} question {i}", "output": [f" answer {i} ", "alt"]}
            for i in range(n_instances)
        ],
    }


@pytest.fixture
def ni_dir(tmp_path: Path) -> Path:
    """A tiny NI folder: task_a.json (5 instances), task_b.json.gz (12), task_c.json (3)."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "task_a.json").write_text(json.dumps(ni_task("Answer A.", 5, "a")))
    with gzip.open(tasks / "task_b.json.gz", "wt", encoding="utf-8") as handle:
        json.dump(ni_task(["Answer B.", "Carefully."], 12, "b"), handle)
    (tasks / "task_c.json").write_text(json.dumps(ni_task("Answer C.", 3, "c")))
    pd.DataFrame(
        {
            "task_file": ["task_a.json", "task_b.json.gz", "task_c.json"],
            "ni_category": ["qa", "qa", "classification"],
        }
    ).to_csv(tmp_path / "cats.csv", index=False)
    return tmp_path


def ni_cfg(**changes: object) -> dict:
    """Return an NI config for the ``ni_dir`` fixture (relative paths) with ``changes``."""
    return {"tasks_dir": "tasks", "categories_csv": "cats.csv", "max_per_task": None, **changes}


def test_ni_fixture_prompts(ni_dir: Path) -> None:
    data = load_natural_instructions(ni_cfg(), ni_dir)
    assert_data_model(data)
    assert data.skills == ["classification", "qa"]
    frame = data.examples.set_index("id")
    assert len(frame) == 5 + 12 + 3
    assert frame.loc["task_a-000003", "prompt"] == "Answer A.\n\nInput: a question 3\nOutput:"
    assert frame.loc["task_a-000003", "answer"] == "answer 3"
    assert frame.loc["task_a-000003", "text"] == "Answer A.\n\nInput: a question 3\nOutput: answer 3"
    assert frame.loc["task_b-000011", "prompt"].startswith("Answer B.\nCarefully.\n\nInput: b q")
    assert frame.loc["task_c-000000", "skill"] == "classification"

    demos = load_natural_instructions(ni_cfg(n_demonstrations=2, include_definition=False), ni_dir)
    assert demos.examples.set_index("id").loc["task_c-000001", "prompt"] == (
        "Input: c demo 0\nOutput: demo answer 0\n\n"
        "Input: c demo 1\nOutput: demo answer 1\n\n"
        "Input: c question 1\nOutput:"
    )
    by_task = load_natural_instructions(ni_cfg(skill="task"), ni_dir)
    assert by_task.skills == ["task_a", "task_b", "task_c"]
    assert (by_task.examples["id"].str.rsplit("-", n=1).str[0] == by_task.examples["skill"]).all()


def test_ni_subsampling(ni_dir: Path) -> None:
    first = load_natural_instructions(ni_cfg(max_per_task=4), ni_dir, seed=0).examples
    assert first.groupby("skill").size().to_dict() == {"classification": 3, "qa": 8}
    b_ids = first.loc[first["id"].str.startswith("task_b"), "id"].tolist()
    assert b_ids == sorted(b_ids) and len(b_ids) == 4  # original order kept
    again = load_natural_instructions(ni_cfg(max_per_task=4), ni_dir, seed=0).examples
    pd.testing.assert_frame_equal(first, again)
    subsets = {
        tuple(load_natural_instructions(ni_cfg(max_per_task=4), ni_dir, seed=s).examples["id"])
        for s in range(5)
    }
    assert len(subsets) > 1
    via_source = load_source(
        {"kind": "natural_instructions", "natural_instructions": ni_cfg(max_per_task=4)}, ni_dir
    )
    pd.testing.assert_frame_equal(via_source.examples, first)


def test_ni_bad_input(ni_dir: Path) -> None:
    with pytest.raises(SkillmixInputError, match=r"tasks_dir.*nowhere"):
        load_natural_instructions(ni_cfg(tasks_dir="nowhere"), ni_dir)
    with pytest.raises(SkillmixInputError, match=r"categories_csv.*none\.csv"):
        load_natural_instructions(ni_cfg(categories_csv="none.csv"), ni_dir)
    with pytest.raises(SkillmixInputError, match=r"cats\.csv: column 'category'.*available"):
        load_natural_instructions(ni_cfg(category_column="category"), ni_dir)
    with pytest.raises(SkillmixInputError, match=r"cats\.csv: column 'file'.*file_column"):
        load_natural_instructions(ni_cfg(file_column="file"), ni_dir)
    with pytest.raises(SkillmixInputError, match=r"natural_instructions\.skill: .domain. is not one of"):
        load_natural_instructions(ni_cfg(skill="domain"), ni_dir)
    with pytest.raises(SkillmixInputError, match=r"task_a\.json: has 2 'Positive Examples'"):
        load_natural_instructions(ni_cfg(n_demonstrations=3), ni_dir)

    csv = ni_dir / "cats.csv"
    csv.write_text("task_file,ni_category\ntask_a.json,qa\ntask_z.json,qa\n")
    with pytest.raises(SkillmixInputError, match=r"do not exist.*task_z\.json"):
        load_natural_instructions(ni_cfg(), ni_dir)
    csv.write_text("task_file,ni_category\ntask_a.json,qa\ntask_a.json,qa\n")
    with pytest.raises(SkillmixInputError, match=r"more than once.*task_a\.json"):
        load_natural_instructions(ni_cfg(), ni_dir)
    csv.write_text("task_file,ni_category\ntask_a.json,\n")
    with pytest.raises(SkillmixInputError, match=r"line 2 \(task_a\.json\) has an empty 'ni_category'"):
        load_natural_instructions(ni_cfg(), ni_dir)

    csv.write_text("task_file,ni_category\ntask_a.json,qa\n")
    task = ni_task("Answer A.", 2, "a")
    del task["Instances"]
    (ni_dir / "tasks" / "task_a.json").write_text(json.dumps(task))
    with pytest.raises(SkillmixInputError, match=r"task_a\.json: not valid NI JSON.*'Instances'"):
        load_natural_instructions(ni_cfg(), ni_dir)
    task = ni_task("Answer A.", 2, "a")
    task["Instances"][1] = {"input": "x"}
    (ni_dir / "tasks" / "task_a.json").write_text(json.dumps(task))
    with pytest.raises(SkillmixInputError, match=r"task_a\.json.*'Instances'\[1\].*'output'"):
        load_natural_instructions(ni_cfg(), ni_dir)
    (ni_dir / "tasks" / "task_a.json").write_text("{not json")
    with pytest.raises(SkillmixInputError, match=r"task_a\.json: not a valid NI JSON"):
        load_natural_instructions(ni_cfg(), ni_dir)


@pytest.fixture
def ni_subset() -> Path:
    """The shared 20-task NI subset; skip when the shared data folder is absent."""
    if not (NI_SUBSET / "task_categories.csv").is_file():
        pytest.skip(
            f"shared NI data not found at {NI_SUBSET} (set SKILLMIX_SHARED_DATA to the folder "
            "holding ni_task_subset/)"
        )
    return NI_SUBSET


def test_ni_shared_subset(ni_subset: Path) -> None:
    cfg = {
        "tasks_dir": str(ni_subset / "tasks"),
        "categories_csv": str(ni_subset / "task_categories.csv"),
        "max_per_task": 200,
    }
    data = load_natural_instructions(cfg, seed=0)
    assert_data_model(data)
    assert data.skills == [
        "code_to_text",
        "question_answering",
        "stereotype_detection",
        "text_categorization",
        "text_completion",
        "text_to_code",
        "toxic_language_detection",
        "word_semantics",
    ]
    counts = data.examples.groupby("skill").size().to_dict()
    assert counts == {
        "code_to_text": 600,
        "question_answering": 400,
        "stereotype_detection": 800,
        "text_categorization": 200,
        "text_completion": 800,
        "text_to_code": 600,
        "toxic_language_detection": 200,
        "word_semantics": 400,
    }
    assert data.examples["prompt"].str.endswith("\nOutput:").all()
    assert data.examples["prompt"].str.contains("\n\nInput: ").all()  # definition first
    by_task = load_natural_instructions({**cfg, "skill": "task", "max_per_task": 5})
    assert len(by_task.skills) == 20 and len(by_task.examples) == 100
    assert "task126_scan_structured_text_generation_command_action_all" in by_task.skills


def test_ni_chat_rows(ni_dir: Path) -> None:
    plain = load_natural_instructions(ni_cfg(), ni_dir).examples
    chat = load_natural_instructions(ni_cfg(chat=True), ni_dir).examples
    assert (plain["messages"] == "").all() and plain["id"].tolist() == chat["id"].tolist()
    turns = json.loads(chat["messages"].iloc[0])
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[0]["content"] + "\nOutput:" == plain["prompt"].iloc[0]  # the definition is kept
    assert turns[1]["content"] == plain["answer"].iloc[0] == chat["answer"].iloc[0]
