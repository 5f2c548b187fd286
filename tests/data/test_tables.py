"""Tests of tabular sources: files in every format, hf tables, chats and bad cells or files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_sources import assert_data_model

from skillmix.data.sources import load_source
from skillmix.data.sources.tables import load_table
from skillmix.infra.errors import SkillmixInputError

ROWS = [
    {"uid": "a1", "category": "math", "question": "1+1?", "solution": "2", "body": "one"},
    {
        "uid": "a2",
        "category": "geo",
        "question": "Capital of France?",
        "solution": "Paris",
        "body": "two",
    },
    {"uid": "a3", "category": "math", "question": "2*3?", "solution": 6, "body": "three"},
]
QA = {"skill_column": "category", "prompt_column": "question", "answer_column": "solution"}


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` to ``path`` in the format its suffix names."""
    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        frame.astype(str).to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.astype({"solution": str}).to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_table_prompt_answer_files(tmp_path: Path, suffix: str) -> None:
    write_rows(tmp_path / f"data{suffix}", ROWS)
    data = load_table({"path": f"data{suffix}", **QA}, base_dir=tmp_path)
    assert_data_model(data)
    assert data.skills == ["geo", "math"]
    assert data.origin == str(tmp_path / f"data{suffix}")
    assert data.examples.to_dict("records")[2] == {
        "id": "row-000002",
        "skill": "math",
        "prompt": "2*3?",
        "answer": "6",
        "text": "2*3? 6",
        "messages": "",
    }


def test_table_text_column_and_id_column(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "data.jsonl", ROWS)
    data = load_table(
        {"path": str(path), "skill_column": "category", "text_column": "body", "id_column": "uid"}
    )
    assert_data_model(data)
    assert data.examples["id"].tolist() == ["a1", "a2", "a3"]
    assert data.examples["text"].tolist() == ["one", "two", "three"]
    assert (data.examples["prompt"] == "").all() and (data.examples["answer"] == "").all()


def test_table_hf_disk_and_hf_builder(tmp_path: Path) -> None:
    import datasets

    frame = pd.DataFrame(ROWS).astype({"solution": str})
    dataset = datasets.Dataset.from_pandas(frame, preserve_index=False)
    dataset.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(str(tmp_path / "dict"))
    expected = load_table({"path": str(write_rows(tmp_path / "d.jsonl", ROWS)), **QA}).examples

    single = load_table({"path": "single", **QA}, base_dir=tmp_path)
    pd.testing.assert_frame_equal(single.examples, expected)
    split = load_table({"path": "dict", "format": "hf_disk", "hf_split": "test", **QA}, tmp_path)
    assert split.examples["prompt"].tolist() == ["1+1?"]
    with pytest.raises(SkillmixInputError, match=r"split 'validation'.*available splits.*test"):
        load_table({"path": "dict", "hf_split": "validation", **QA}, tmp_path)

    built = load_table({"format": "hf", "hf_name": "json", "data_files": "d.jsonl", **QA}, tmp_path)
    pd.testing.assert_frame_equal(built.examples, expected)
    with pytest.raises(SkillmixInputError, match="never downloads"):
        load_table({"format": "hf", "hf_name": "someone/remote_set", **QA}, tmp_path)
    with pytest.raises(SkillmixInputError, match=r"data_files.*missing\.jsonl"):
        load_table({"format": "hf", "hf_name": "json", "data_files": "missing.jsonl", **QA}, tmp_path)


def bad_rows(**changes: object) -> list[dict]:
    """Return a copy of ROWS whose second row has ``changes`` applied (None deletes a key)."""
    rows = [dict(row) for row in ROWS]
    for key, value in changes.items():
        rows[1][key] = value
    return rows


@pytest.mark.parametrize(
    ("rows", "cfg", "message"),
    [
        (ROWS, {**QA, "skill_column": "topic"}, r"column 'topic'.*available columns.*category"),
        (ROWS, {**QA, "answer_column": "sol"}, r"column 'sol'.*answer_column"),
        (ROWS, {"skill_column": "category", "prompt_column": "question"}, "either text_column"),
        (ROWS, {**QA, "text_column": "body"}, "both text_column and prompt_column"),
        (ROWS, {**QA, "id_column": "nope"}, r"column 'nope'.*id_column"),
        (bad_rows(category=None), QA, r"row row-000001 has an empty or null skill"),
        (bad_rows(category=""), QA, r"row row-000001 has an empty or null skill"),
        (bad_rows(solution=None), QA, r"row row-000001 \(skill 'geo'\).*null answer"),
        (bad_rows(solution=" "), QA, r"row row-000001 \(skill 'geo'\).*answer"),
        (bad_rows(question=""), QA, r"row row-000001 \(skill 'geo'\).*prompt"),
        (
            bad_rows(body=""),
            {"skill_column": "category", "text_column": "body"},
            r"row row-000001 \(skill 'geo'\).*empty or null text",
        ),
        (bad_rows(uid="a1"), {**QA, "id_column": "uid"}, r"duplicated id.*'a1'"),
    ],
)
def test_table_bad_input(tmp_path: Path, rows: list[dict], cfg: dict, message: str) -> None:
    path = write_rows(tmp_path / "data.jsonl", rows)
    with pytest.raises(SkillmixInputError, match=message) as info:
        load_table({"path": str(path), **cfg})
    assert str(path) in str(info.value)


def test_table_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SkillmixInputError, match=r"source\.table\.path.*nothere\.jsonl"):
        load_table({"path": "nothere.jsonl", **QA}, tmp_path)
    write_rows(tmp_path / "data.jsonl", ROWS)
    with pytest.raises(SkillmixInputError, match=r"source\.table\.format.*'xlsx'"):
        load_table({"path": "data.jsonl", "format": "xlsx", **QA}, tmp_path)
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(SkillmixInputError, match=r"data\.txt: cannot tell the format"):
        load_table({"path": "data.txt", **QA}, tmp_path)
    (tmp_path / "broken.jsonl").write_text('{"category": "a"}\n{oops\n')
    with pytest.raises(SkillmixInputError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        load_table({"path": "broken.jsonl", **QA}, tmp_path)
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(SkillmixInputError, match=r"broken\.parquet: not a readable Parquet"):
        load_table({"path": "broken.parquet", **QA}, tmp_path)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(SkillmixInputError, match=r"empty_dir: not a datasets save_to_disk"):
        load_table({"path": "empty_dir", **QA}, tmp_path)


def test_table_via_load_source(tmp_path: Path) -> None:
    write_rows(tmp_path / "data.csv", ROWS)
    data = load_source({"kind": "table", "table": {"path": "data.csv", **QA}}, base_dir=tmp_path)
    assert data.examples["answer"].tolist() == ["2", "Paris", "6"]


CHATS = [
    {
        "topic": "geo",
        "messages": [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris"},
        ],
    },
    {
        "topic": "math",
        "messages": [
            {"role": "system", "content": "Be exact."},
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": "2*3?"},
            {"role": "assistant", "content": "6"},
        ],
    },
]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_table_messages_column(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"chats{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in CHATS))
    else:
        pd.DataFrame(CHATS).to_parquet(path, index=False)
    data = load_table(
        {"path": path.name, "skill_column": "topic", "messages_column": "messages"}, base_dir=tmp_path
    )
    assert_data_model(data)
    row = data.examples.iloc[1]
    assert (row["prompt"], row["answer"], row["text"]) == ("2*3?", "6", "2*3? 6")
    assert json.loads(row["messages"]) == CHATS[1]["messages"]


def test_table_messages_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"topic": "x", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    cfg = {"path": path.name, "skill_column": "topic", "messages_column": "messages"}
    with pytest.raises(
        SkillmixInputError, match=r"chats.jsonl: row row-000000, column 'messages': the last turn"
    ):
        load_table(cfg, base_dir=tmp_path)
    with pytest.raises(SkillmixInputError, match="sets messages_column and prompt_column"):
        load_table({**cfg, "prompt_column": "topic"}, base_dir=tmp_path)


def test_format_json_is_a_format_the_schema_accepts(tmp_path: Path) -> None:
    # a JSON list of objects under a name that does not say so: format json, as README documents
    records = [
        {"category": s, "question": f"q{i}", "solution": f"a{i}"} for s in ("x", "y") for i in range(3)
    ]
    (tmp_path / "data.txt").write_text(json.dumps(records))
    built = load_table({"path": "data.txt", "format": "json", **QA}, tmp_path)
    assert built.skills == ["x", "y"] and len(built.examples) == 6
