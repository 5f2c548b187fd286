"""Learned artefacts checked as the slices are (issue 29): a skills graph edited, truncated or
replaced; a truncated safetensors file in a saved model folder; a damaged resume state; both at
the job that reads them and, in the workflow, when the DAG is built (before any output is deleted)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from workflow_helpers import run_ok, snakemake

from skillmix.engine.encoding import encode_frame
from skillmix.engine.modeling import build_tiny_model, select_runtime
from skillmix.engine.resume import latest_resume_state, load_resume_state
from skillmix.engine.tokenizers import byte_tokenizer
from skillmix.engine.training import TrainSettings, train
from skillmix.graph.store import read_graph
from skillmix.infra.artefacts import check_learned_artefacts, check_safetensors, check_saved_model
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.strategies import make_sampler

SKILLS = ["a", "b", "c"]

# --------------------------------------------------------------------------- skills graph


def _graph(folder: Path, A=None, names=None, shape=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    A = np.eye(3) if A is None else A
    np.save(folder / "adjacency.npy", A, allow_pickle=True)
    names = {"rows": SKILLS, "columns": SKILLS} if names is None else names
    (folder / "skills.json").write_text(json.dumps(names))
    (folder / "graph.json").write_text(json.dumps({"method": "brute_force", "shape": shape or [3, 3]}))
    return folder


def test_a_whole_graph_reads(tmp_path) -> None:
    A, rows, columns = read_graph(_graph(tmp_path / "g"), SKILLS)
    assert A.dtype == np.float64 and rows == columns == SKILLS


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncated", "not a readable float matrix"),
        ("object array", "not a readable float matrix"),
        ("integers", "holds int64 values, expected floats"),
        ("nan", "not finite"),
        ("wrong shape", r"has shape \(2, 3\) but skills.json names 3 rows"),
        ("repeated name", r"rows repeats \['a'\]"),
        ("names not a dict", "must be"),
        ("bad json", "must be"),
        ("other skills", "not skills of the data"),
        ("shape not as recorded", "graph.json records"),
    ],
)
def test_a_damaged_graph_is_refused_naming_the_folder(tmp_path, damage, expected) -> None:
    folder = _graph(tmp_path / "g")
    if damage == "truncated":
        data = (folder / "adjacency.npy").read_bytes()
        (folder / "adjacency.npy").write_bytes(data[: len(data) - 20])
    elif damage == "object array":
        _graph(folder, A=np.array([[1.0, None, 0.0]] * 3, dtype=object))
    elif damage == "integers":
        _graph(folder, A=np.eye(3, dtype=np.int64))
    elif damage == "nan":
        _graph(folder, A=np.where(np.eye(3) > 0, np.nan, 0.0))
    elif damage == "wrong shape":
        _graph(folder, A=np.zeros((2, 3)), shape=[2, 3])
    elif damage == "repeated name":
        _graph(folder, names={"rows": ["a", "a", "c"], "columns": SKILLS})
    elif damage == "names not a dict":
        _graph(folder, names=SKILLS)
    elif damage == "bad json":
        (folder / "skills.json").write_text('{"rows": ["a", "b"')
    elif damage == "other skills":
        _graph(folder, names={"rows": ["a", "b", "x"], "columns": SKILLS})
    elif damage == "shape not as recorded":
        _graph(folder, A=np.zeros((2, 2)), names={"rows": ["a", "b"], "columns": ["a", "b"]})
    with pytest.raises(SkillmixInputError, match=expected) as info:
        read_graph(folder, SKILLS)
    assert str(folder) in str(info.value) and "delete the folder" in str(info.value)


# --------------------------------------------------------------------------- safetensors


def _model_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    save_file({"w": torch.arange(64.0).reshape(8, 8), "b": torch.ones(8)}, folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    return folder


def _truncate(path: Path, by: int = 16) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - by])


def test_whole_safetensors_pass_and_truncated_ones_name_their_folder(tmp_path) -> None:
    folder = _model_folder(tmp_path / "results" / "train" / "random" / "model")
    check_saved_model(folder)
    _truncate(folder / "model.safetensors")
    with pytest.raises(SkillmixInputError) as info:
        check_saved_model(folder)
    message = str(info.value)
    assert str(folder) in message and "model.safetensors is truncated" in message
    assert f"Delete the folder {folder}" in message


def test_loading_a_saved_model_checks_its_weights_first(tmp_path) -> None:
    from skillmix.engine.modeling import build_tiny_model, load_saved, save_model

    model, tokenizer = build_tiny_model(
        {"architecture": "llama", "hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2,
         "max_positions": 32, "tokenizer": "byte"}, seed=0
    )  # fmt: skip
    folder = tmp_path / "model"
    save_model(model, tokenizer, folder)
    load_saved(folder)
    _truncate(folder / "model.safetensors")
    with pytest.raises(SkillmixInputError, match=f"{folder}.*model.safetensors is truncated"):
        load_saved(folder)


@pytest.mark.parametrize("content", [b"", b"\x05\x00", b"\xff" * 8 + b"{}", b"\x04" + b"\x00" * 7 + b"nope"])
def test_garbage_safetensors_are_refused(tmp_path, content) -> None:
    (tmp_path / "x.safetensors").write_bytes(content)
    with pytest.raises(SkillmixInputError, match="truncated or damaged"):
        check_safetensors(tmp_path / "x.safetensors")


def test_learned_artefacts_skip_temporary_folders_and_resume_states(tmp_path) -> None:
    results = tmp_path / "results"
    _model_folder(results / "train" / "random" / "model")
    adapter = _model_folder(results / "train" / "lora" / "model" / "adapter")
    for debris in (results / "train" / ".model.tmp-4242", results / "resume" / "train" / "random"):
        _truncate(_model_folder(debris) / "model.safetensors")  # a killed job's; a cache
    check_learned_artefacts(results)
    _truncate(adapter / "model.safetensors")
    with pytest.raises(SkillmixInputError, match=str(adapter.parent)):
        check_learned_artefacts(results)
    local = _model_folder(tmp_path / "my-model")
    _truncate(local / "model.safetensors")
    with pytest.raises(SkillmixInputError, match="my-model"):
        check_learned_artefacts(tmp_path / "nothing", [local / "config.json", local / "model.safetensors"])


# --------------------------------------------------------------------------- resume states

TINY = {
    "architecture": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 1,
    "num_heads": 2,
    "max_positions": 64,
}
CPU = select_runtime("cpu", "fp32")
SETTINGS = TrainSettings(steps=12, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=6, resume_every=3)


@pytest.fixture(scope="module")
def toy():
    tok = byte_tokenizer()
    rows = [{"id": f"s-{i}", "skill": "s", "prompt": f"{i % 10} =", "answer": str(i % 3)} for i in range(60)]
    data = pd.DataFrame(rows).assign(text=lambda f: f.prompt + " " + f.answer)
    return tok, [encode_frame(tok, data, "s", 32)]


def _run(toy, ckpt: Path | None, stop_after: int | None = None):
    tok, sets = toy
    model, _ = build_tiny_model(TINY, seed=0)
    sampler = make_sampler("random", ["s"], [len(sets[0])], 0)
    result = train(
        model, tok, sets, sampler, SETTINGS, CPU, resume_dir=ckpt, fingerprint_="run", stop_after=stop_after
    )
    return model.state_dict(), result


@pytest.fixture(scope="module")
def uninterrupted(toy):
    return _run(toy, None)


def _assert_same(a, b) -> None:
    weights_a, result_a = a
    weights_b, result_b = b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    pd.testing.assert_frame_equal(result_a.steps, result_b.steps)


@pytest.mark.parametrize("damage", ["truncated weights", "missing optimizer", "bad state.json", "no keys"])
def test_a_damaged_resume_state_is_discarded_and_the_run_starts_afresh(
    toy, uninterrupted, tmp_path, caplog, damage
) -> None:
    ckpt = tmp_path / "ckpt"
    _run(toy, ckpt, stop_after=7)
    (state,) = ckpt.glob("step-*")
    if damage == "truncated weights":
        _truncate(state / "trainable.safetensors", by=100)
    elif damage == "missing optimizer":
        (state / "optimizer.safetensors").unlink()  # as a kill -9 part way through removing it leaves it
    elif damage == "bad state.json":
        (state / "state.json").write_text('{"step": 6, "fingerp')
    else:
        (state / "state.json").write_text('{"step": 6, "fingerprint": "run"}')
    with caplog.at_level(logging.WARNING):
        assert latest_resume_state(ckpt, "run") is None
    assert str(state) in caplog.text and "damaged" in caplog.text
    again = _run(toy, ckpt)
    assert again[1].completed and again[1].resumed_from is None
    _assert_same(again, uninterrupted)


def test_a_whole_older_state_is_resumed_bit_identically_past_a_damaged_newer_one(
    toy, uninterrupted, tmp_path
) -> None:
    ckpt = tmp_path / "ckpt"
    _run(toy, ckpt, stop_after=4)
    (older,) = ckpt.glob("step-*")
    kept = tmp_path / older.name
    shutil.copytree(older, kept)
    _run(toy, ckpt, stop_after=7)
    shutil.copytree(kept, ckpt / kept.name)  # as a kill -9 before the older one was removed
    (newer,) = [p for p in ckpt.glob("step-*") if p.name != kept.name]
    _truncate(newer / "rng.safetensors")
    assert latest_resume_state(ckpt, "run") == ckpt / kept.name
    again = _run(toy, ckpt)
    assert again[1].resumed_from == int(kept.name.split("-")[1])
    _assert_same(again, uninterrupted)


def test_loading_a_damaged_state_names_the_folder_to_delete(toy, tmp_path) -> None:
    ckpt = tmp_path / "ckpt"
    _run(toy, ckpt, stop_after=4)
    (state,) = ckpt.glob("step-*")
    (state / "rng.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}      ")  # a whole, empty file
    tok, sets = toy
    model, _ = build_tiny_model(TINY, seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    sampler = make_sampler("random", ["s"], [len(sets[0])], 0)
    with pytest.raises(SkillmixInputError, match=f"delete the folder {ckpt}"):
        load_resume_state(state, model, optimizer, scheduler, sampler)


# --------------------------------------------------------------------------- at DAG time


SAME_SLICES = ("--rerun-triggers", "mtime")
"""The slices made by the fixture stay up to date while the library's code changes meanwhile."""


@pytest.fixture(scope="module")
def sliced(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("work")
    run_ok(work, "results/slices/manifest.json")
    return work


def _fake_outputs(work: Path, run: str) -> list[Path]:
    folder = work / "results" / "train" / run
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / name for name in ("steps.parquet", "job_metrics.json")]
    for path in files:
        path.write_text("a good output of an earlier run")
    return files


def test_a_damaged_graph_stops_the_dag_before_outputs_are_deleted(sliced, tmp_path) -> None:
    work = tmp_path / "work"
    shutil.copytree(sliced, work, symlinks=True)
    skills = [s["name"] for s in json.loads((work / "results/slices/manifest.json").read_text())["skills"]]
    folder = work / "results" / "graph" / "brute_force"
    folder.mkdir(parents=True)
    np.save(folder / "adjacency.npy", np.array([[None] * 3] * 3, dtype=object), allow_pickle=True)
    (folder / "skills.json").write_text(json.dumps({"rows": skills, "columns": skills}))
    outputs = _fake_outputs(work, "skillit")
    result = snakemake(work, "results/train/skillit/steps.parquet", *SAME_SLICES)
    assert result.returncode != 0
    assert "adjacency.npy is not a readable float matrix" in result.output, result.describe()
    assert "delete the folder" in result.output
    assert all(path.exists() for path in outputs)


def test_a_truncated_saved_model_is_named_instead_of_nothing_to_be_done(sliced, tmp_path) -> None:
    work = tmp_path / "work"
    shutil.copytree(sliced, work, symlinks=True)
    model = _model_folder(work / "results" / "train" / "random" / "model")
    _truncate(model / "model.safetensors")
    result = snakemake(work, "-n", "results/train/random/steps.parquet", *SAME_SLICES)
    assert result.returncode != 0, result.describe()
    assert "model.safetensors is truncated" in result.output, result.describe()
    assert "results/train/random/model" in result.output
