"""Data and model files are rule inputs: an edit re-runs what reads them, a missing one stops the dry
run naming its key."""

from __future__ import annotations

import json

from workflow_helpers import MAIN_CONFIG, TINY_CONFIG, job_stats, planned_jobs, run_ok, snakemake, write_yaml


def table_rows(skills, n, start=0):
    return "".join(
        json.dumps({"skill": s, "question": f"q{s}{i}", "reply": f"a{i % 3}"}) + "\n"
        for s in skills
        for i in range(start, start + n)
    )


def test_editing_the_table_reruns_slice_and_a_missing_file_is_named(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    data = work / "data" / "examples.jsonl"
    data.parent.mkdir()
    data.write_text(table_rows(["x", "y"], 20))
    override = write_yaml(
        tmp_path / "table.yaml",
        {
            "source": {
                "kind": "table",
                # relative to the working directory, as users write it
                "table": {
                    "path": "data/examples.jsonl",
                    "prompt_column": "question",
                    "answer_column": "reply",
                },
            },
            "split": {"val": 3, "test": 3},
            "train": {"strategies": ["random"]},
        },
    )
    configs = (MAIN_CONFIG, TINY_CONFIG, override)
    run_ok(work, "results/slices/manifest.json", configs=configs)
    manifest = json.loads((work / "results/slices/manifest.json").read_text())
    assert [s["name"] for s in manifest["skills"]] == ["x", "y"]
    planned = run_ok(work, "-n", "results/slices/manifest.json", configs=configs)
    assert job_stats(planned.output) == {}, planned.describe()

    with data.open("a") as f:  # a new skill appears in the file
        f.write(table_rows(["z"], 20))
    planned = run_ok(work, "-n", "results/slices/manifest.json", configs=configs)
    jobs = planned_jobs(planned.output)
    assert [j.rule for j in jobs] == ["slice"], planned.describe()
    assert "Updated input files: data/examples.jsonl" in jobs[0].reason, planned.describe()
    run_ok(work, "results/slices/manifest.json", configs=configs)
    manifest = json.loads((work / "results/slices/manifest.json").read_text())
    assert [s["name"] for s in manifest["skills"]] == ["x", "y", "z"]

    data.unlink()
    result = snakemake(work, "-n", configs=configs)
    assert result.returncode != 0, result.describe()
    assert "config source.table.path: file data/examples.jsonl does not exist" in result.output, (
        result.describe()
    )


def test_a_local_model_folder_is_an_input_and_a_missing_one_is_named(tmp_path):
    from skillmix.engine.modeling import build_tiny_model, save_model

    work = tmp_path / "work"
    work.mkdir()
    model, tokenizer = build_tiny_model(
        {"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2, "max_positions": 96}, 0
    )
    save_model(model, tokenizer, work / "models" / "base")
    override = write_yaml(
        tmp_path / "model.yaml",
        {"model": {"kind": "pretrained", "name_or_path": "models/base"}, "train": {"strategies": ["random"]}},
    )
    configs = (MAIN_CONFIG, TINY_CONFIG, override)
    run_ok(work, "results/slices/manifest.json", configs=configs)
    planned = run_ok(work, "-n", configs=configs)
    train = next(j for j in planned_jobs(planned.output) if j.rule == "train")
    assert train is not None
    inputs = next(line for line in planned.output.splitlines() if "models/base/model.safetensors" in line)
    assert "input:" in inputs and "results/slices/train" in inputs, planned.describe()

    gone = write_yaml(
        tmp_path / "gone.yaml", {"model": {"kind": "pretrained", "name_or_path": "./models/typo"}}
    )
    result = snakemake(work, "-n", configs=(*configs, gone))
    assert result.returncode != 0, result.describe()
    assert "config model.name_or_path: folder ./models/typo does not exist" in result.output, (
        result.describe()
    )
