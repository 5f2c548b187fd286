"""The files a configured source or model reads, as rule inputs; a missing one is named by its key."""

from __future__ import annotations

import json

import pytest

from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.inputs import based_on, looks_local, model_files, source_files


def test_table_file_folder_and_hf_data_files(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text("{}\n")
    assert source_files({"kind": "table", "table": {"path": "data.jsonl"}}) == {
        "source.table.path": ["data.jsonl"]
    }
    disk = tmp_path / "disk"
    (disk / "train").mkdir(parents=True)
    for name in ("dataset_dict.json", "train/data-00000.arrow", "train/state.json", ".hidden"):
        (disk / name).write_text("x")
    got = source_files({"kind": "table", "table": {"path": "disk", "format": "hf_disk"}})
    assert got == {
        "source.table.path": [
            "disk/dataset_dict.json",
            "disk/train/data-00000.arrow",
            "disk/train/state.json",
        ]
    }
    hf = {"format": "hf", "hf_name": "json", "data_files": {"train": ["data.jsonl"], "test": "data.jsonl"}}
    assert source_files({"kind": "table", "table": hf}) == {
        "source.table.data_files": ["data.jsonl", "data.jsonl"]
    }
    # globs and URLs are the library's business, not files to watch
    glob = {**hf, "data_files": "*.jsonl"}
    assert source_files({"kind": "table", "table": glob}) == {"source.table.data_files": []}
    assert source_files({"kind": "lego"}) == {}
    with pytest.raises(SkillmixInputError, match=r"config source.table.path: file nope.csv does not exist"):
        source_files({"kind": "table", "table": {"path": "nope.csv"}})
    with pytest.raises(SkillmixInputError, match=r"source.table.data_files: file gone.jsonl does not exist"):
        source_files({"kind": "table", "table": {**hf, "data_files": ["gone.jsonl"]}})


def test_natural_instructions_lists_the_csv_and_its_existing_tasks(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name in ("task1_a.json", "task2_b.json", "task9_unlisted.json"):
        (tasks / name).write_text(json.dumps({}))
    (tmp_path / "cats.csv").write_text(
        "task_file,ni_category\ntask1_a.json,A\ntask2_b.json,B\ntask3_gone.json,C\n"
    )
    ni = {"tasks_dir": "tasks", "categories_csv": "cats.csv"}
    got = source_files({"kind": "natural_instructions", "natural_instructions": ni})
    assert got == {
        "source.natural_instructions.categories_csv": ["cats.csv"],
        "source.natural_instructions.tasks_dir": ["tasks/task1_a.json", "tasks/task2_b.json"],
    }
    with pytest.raises(SkillmixInputError, match="source.natural_instructions.tasks_dir: folder missing"):
        source_files({"kind": "natural_instructions", "natural_instructions": {**ni, "tasks_dir": "missing"}})


def test_model_folder_gguf_and_hub_names(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / "m" / name).write_text("x")
    assert model_files({"kind": "tiny"}) == {}
    assert model_files({"kind": "pretrained", "name_or_path": "m"}) == {
        "model.name_or_path": ["m/config.json", "m/model.safetensors", "m/tokenizer.json"]
    }
    (tmp_path / "m" / "x.gguf").write_text("x")
    assert model_files({"kind": "gguf", "name_or_path": "m", "gguf_file": "x.gguf"}) == {
        "model.gguf_file": ["m/x.gguf"]
    }
    assert (
        model_files({"kind": "pretrained", "name_or_path": "HuggingFaceTB/SmolLM2-135M"}) == {}
    )  # cached hub name
    with pytest.raises(
        SkillmixInputError, match=r"config model.name_or_path: folder ./models/gone does not exist"
    ):
        model_files({"kind": "pretrained", "name_or_path": "./models/gone"})
    with pytest.raises(SkillmixInputError, match=r"config model.gguf_file: file m/y.gguf does not exist"):
        model_files({"kind": "gguf", "name_or_path": "m", "gguf_file": "y.gguf"})
    assert (
        looks_local("/abs/m") and looks_local("a/b/c") and looks_local("~/m") and not looks_local("org/model")
    )


def test_based_on_loads_the_base_run_from_its_input() -> None:
    model = {"kind": "gguf", "name_or_path": "x", "gguf_file": "m.gguf", "max_length": 64}
    assert based_on(model, []) == model
    assert based_on(model, ["pre/results/train/random/model"]) == {
        "kind": "pretrained",
        "name_or_path": "pre/results/train/random/model",
        "gguf_file": None,
        "max_length": 64,
    }
