"""Tests of the strict checks of the table and Natural-Instructions loaders: non-scalar cells,
mixed-type and case-colliding skills, bytes that are not UTF-8 and truncated ``.gz`` files."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skillmix.data.sources.natural_instructions import load_natural_instructions
from skillmix.data.sources.table_cells import build_source
from skillmix.data.sources.tables import load_table
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError

QA = {"skill_column": "category", "prompt_column": "question", "answer_column": "solution"}


def qa_rows(n: int = 4, **row1: object) -> list[dict]:
    """``n`` valid prompt/answer rows, the second one with ``row1`` applied."""
    rows = [
        {"uid": f"u{i}", "category": "math", "question": f"{i}+1?", "solution": str(i + 1), "body": "b"}
        for i in range(n)
    ]
    rows[1].update(row1)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` as JSON lines."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def table_error(path: Path, **cfg: object) -> str:
    """The message of the SkillmixInputError that loading table ``path`` with ``cfg`` raises."""
    with pytest.raises(SkillmixInputError) as info:
        load_table({"path": str(path), **cfg})
    return str(info.value)


# --------------------------------------------------------------------------- non-scalar cells


def test_parquet_list_cell_in_prompt_column(tmp_path: Path) -> None:
    rows = qa_rows()
    frame = pd.DataFrame(rows).assign(question=[[r["question"], "x"] for r in rows])
    frame.to_parquet(tmp_path / "data.parquet", index=False)
    message = table_error(tmp_path / "data.parquet", **QA)
    assert message == (
        f"{tmp_path / 'data.parquet'}: column 'question' (source.table.prompt_column) holds a list in "
        "row row-000000; expected text"
    )


def test_parquet_binary_cell_in_answer_column(tmp_path: Path) -> None:
    rows = qa_rows()
    pd.DataFrame(rows).assign(solution=[r["solution"].encode() for r in rows]).to_parquet(
        tmp_path / "data.parquet", index=False
    )
    message = table_error(tmp_path / "data.parquet", **QA, id_column="uid")
    assert re.search(
        r"data\.parquet: column 'solution' \(source\.table\.answer_column\) holds bytes in row u0;", message
    )


def test_jsonl_dict_cell_in_text_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", qa_rows(body={"text": "hi"}))
    message = table_error(path, skill_column="category", text_column="body")
    assert "data.jsonl: column 'body' (source.table.text_column) holds a dict in row row-000001" in message


def test_jsonl_list_cell_in_skill_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", qa_rows(category=["math", "geo"]))
    message = table_error(path, **QA, id_column="uid")
    assert (
        "column 'category' (source.table.skill_column) holds a list in row u1; expected a string or a number"
        in message
    )


def test_jsonl_list_cell_in_id_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", qa_rows(uid=["u", 1]))
    message = table_error(path, **QA, id_column="uid")
    assert "column 'uid' (source.table.id_column) holds a list in row 1 (0-based)" in message


@pytest.mark.parametrize(
    ("cell", "kind"),
    [
        (("a", "b"), "a tuple"),
        ({"a"}, "a set"),
        (np.array(["a"]), "a numpy array"),
        (bytearray(b"a"), "a bytearray"),
    ],
)
def test_other_non_scalar_cells(cell: object, kind: str) -> None:
    columns = {"category": ["math", "math"], "question": ["q", cell], "solution": ["a", "b"]}
    with pytest.raises(
        SkillmixInputError, match=f"'question' .*prompt_column.* holds {kind} in row row-000001"
    ):
        build_source(columns, complete("source.table", QA), "mem")


def test_hf_disk_list_column(tmp_path: Path) -> None:
    import datasets

    rows = qa_rows()
    frame = pd.DataFrame(rows).assign(solution=[[r["solution"]] for r in rows])
    datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(tmp_path / "ds"))
    message = table_error(tmp_path / "ds", **QA)
    assert "ds: column 'solution' (source.table.answer_column) holds a list in row row-000000" in message


def test_hf_builder_list_column(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", qa_rows(question=["1+1?"]))
    with pytest.raises(SkillmixInputError) as info:
        load_table({"format": "hf", "hf_name": "json", "data_files": "d.jsonl", **QA}, tmp_path)
    assert "column 'question' (source.table.prompt_column) holds a list in row row-000001" in str(info.value)


def test_numbers_and_booleans_in_text_columns_stay(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", qa_rows(question=7, solution=True))
    data = load_table({"path": str(path), **QA})
    assert data.examples.loc[1, ["prompt", "answer"]].tolist() == ["7", "True"]


# --------------------------------------------------------------------------- skill types and names


def test_mixed_number_and_string_skills(tmp_path: Path) -> None:
    rows = qa_rows(category="1")
    rows[0]["category"] = 1
    message = table_error(write_jsonl(tmp_path / "data.jsonl", rows), **QA)
    assert (
        "data.jsonl: column 'category' (source.table.skill_column) holds both int and str skills" in message
    )
    assert "row row-000000: 1; row row-000001: '1'" in message


def test_all_integer_skills_are_fine(tmp_path: Path) -> None:
    rows = qa_rows()
    for index, row in enumerate(rows):
        row["category"] = index % 2
    data = load_table({"path": str(write_jsonl(tmp_path / "data.jsonl", rows)), **QA})
    assert data.skills == ["0", "1"]


def case_rows() -> list[dict]:
    """Rows whose skills are 'alpha', 'Alpha', 'alpha ', ' beta' (no twin) and 'gamma'."""
    rows = qa_rows(6)
    for row, skill in zip(rows, ["alpha", "Alpha", "gamma", "alpha ", " beta", "gamma"], strict=True):
        row["category"] = skill
    return rows


def test_case_colliding_skills_stop_by_default(tmp_path: Path) -> None:
    message = table_error(write_jsonl(tmp_path / "data.jsonl", case_rows()), **QA)
    assert (
        "data.jsonl: column 'category' (source.table.skill_column) has skill names that differ only by "
        "letter case or surrounding whitespace: 'alpha' (row row-000000), 'Alpha' (row row-000001), "
        "'alpha ' (row row-000003); set source.table.merge_skill_names: true" in message
    )


def test_case_colliding_skills_merge(tmp_path: Path) -> None:
    rows = case_rows()
    rows[0]["category"] = " Alpha"
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    data = load_table({"path": str(path), **QA, "merge_skill_names": True})
    assert data.skills == [" beta", "Alpha", "gamma"]
    assert data.examples["skill"].tolist() == ["Alpha", "Alpha", "gamma", "Alpha", " beta", "gamma"]


# --------------------------------------------------------------------------- decode errors


def test_jsonl_bad_utf8_names_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", qa_rows())
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"2+1?", b"2+1\xff?")
    path.write_bytes(b"".join(lines))
    message = table_error(path, **QA)
    assert re.fullmatch(
        r".*data\.jsonl: line 3 is not valid UTF-8 \(byte 0xff at byte \d+ of the line\).*", message
    )


def test_jsonl_gz_bad_utf8_names_line(tmp_path: Path) -> None:
    text = "".join(json.dumps(row) + "\n" for row in qa_rows()).encode()
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress(text.replace(b"3+1?", b"3+1\xc3(?")))
    assert "data.jsonl.gz: line 4 is not valid UTF-8 (byte 0xc3" in table_error(path, **QA)


def test_json_bad_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(json.dumps(qa_rows(), indent=1).encode().replace(b"2+1?", b"2+1\xfe?"))
    expected = json.dumps(qa_rows(), indent=1).splitlines().index('  "question": "2+1?",') + 1
    assert f"data.json: line {expected} is not valid UTF-8" in table_error(path, **QA)


def test_csv_bad_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    pd.DataFrame(qa_rows(20)).to_csv(path, index=False)
    path.write_bytes(path.read_bytes().replace(b"15+1?", b"15+1\x80?"))
    assert "data.csv: line 17 is not valid UTF-8 (byte 0x80" in table_error(path, **QA)


def truncated_gz(path: Path, lines: list[str]) -> Path:
    """Write ``lines`` gzipped to ``path``, cut before the gzip trailer and the last block's end."""
    data = gzip.compress("".join(lines).encode())
    path.write_bytes(data[: len(data) // 2])
    return path


def stopped_after(message: str) -> int:
    """The line number in "reading stopped after line N"."""
    match = re.search(r"truncated or corrupt gzip file \(.*\); reading stopped after line (\d+)$", message)
    assert match, message
    return int(match.group(1))


def test_truncated_jsonl_gz(tmp_path: Path) -> None:
    rows = [json.dumps(row) + "\n" for row in qa_rows(4000)]
    path = truncated_gz(tmp_path / "data.jsonl.gz", rows)
    message = table_error(path, **QA)
    assert "data.jsonl.gz: truncated or corrupt gzip file" in message
    assert 0 < stopped_after(message) < len(rows)


def test_truncated_csv_gz(tmp_path: Path) -> None:
    lines = ["category,question,solution\n"] + [f"math,{i}+1?,{i + 1}\n" for i in range(20000)]
    path = truncated_gz(tmp_path / "data.csv.gz", lines)
    message = table_error(path, **QA)
    assert "data.csv.gz: truncated or corrupt gzip file" in message
    assert 0 < stopped_after(message) < len(lines)


def test_json_gz_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "data.json.gz"
    path.write_text(json.dumps(qa_rows()))
    message = table_error(path, **QA)
    assert "data.json.gz: truncated or corrupt gzip file (Not a gzipped file" in message
    assert "not even line 1 could be read" in message


# --------------------------------------------------------------------------- Natural-Instructions


@pytest.fixture
def ni_dir(tmp_path: Path) -> Path:
    """An NI folder with task_a.json listed in cats.csv."""
    (tmp_path / "tasks").mkdir()
    task = {
        "Definition": "Answer.",
        "Instances": [{"input": f"q{i}", "output": [f"a{i}"]} for i in range(50)],
    }
    (tmp_path / "tasks" / "task_a.json").write_text(json.dumps(task, indent=1))
    (tmp_path / "cats.csv").write_text("task_file,ni_category\ntask_a.json,qa\n")
    return tmp_path


def ni_error(ni_dir: Path) -> str:
    """The message of the SkillmixInputError that loading the ``ni_dir`` folder raises."""
    with pytest.raises(SkillmixInputError) as info:
        load_natural_instructions({"tasks_dir": "tasks", "categories_csv": "cats.csv"}, ni_dir)
    return str(info.value)


def test_ni_task_bad_utf8_names_line(ni_dir: Path) -> None:
    path = ni_dir / "tasks" / "task_a.json"
    path.write_bytes(path.read_bytes().replace(b'"q7"', b'"q\xff7"'))
    expected = path.read_bytes().split(b"\n").index(b'   "input": "q\xff7",') + 1
    assert f"task_a.json: line {expected} is not valid UTF-8 (byte 0xff" in ni_error(ni_dir)


def test_ni_truncated_task_gz(ni_dir: Path) -> None:
    text = (ni_dir / "tasks" / "task_a.json").read_text()
    truncated_gz(ni_dir / "tasks" / "task_a.json.gz", text.splitlines(keepends=True))
    (ni_dir / "cats.csv").write_text("task_file,ni_category\ntask_a.json.gz,qa\n")
    message = ni_error(ni_dir)
    assert "task_a.json.gz: truncated or corrupt gzip file" in message
    assert stopped_after(message) < len(text.splitlines())


def test_ni_categories_csv_bad_utf8_names_line(ni_dir: Path) -> None:
    (ni_dir / "cats.csv").write_bytes(b"task_file,ni_category\ntask_a.json,qa\ntask_b.json,q\xe9\n")
    assert "cats.csv: line 3 is not valid UTF-8 (byte 0xe9 at byte 14 of the line)" in ni_error(ni_dir)
