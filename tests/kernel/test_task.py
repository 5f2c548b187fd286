"""Tests of the kernel task (build_task), its kernels from feature shards and the solvers' tables
(task_kernels), and the comparison with fine-tuning (finetuning), on hand-made arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skillmix.infra.errors import SkillmixInputError
from skillmix.kernel.finetuning import initial_accuracy, side_by_side
from skillmix.kernel.task import build_task, split_answer
from skillmix.kernel.task_kernels import (
    formula_transforms,
    kernels_from_features,
    read_arrays,
    solve_kernels,
    write_arrays,
)

FORMULAS = ["sgd", "signgd", "asymmetric_signgd"]


def frames(rows_per_split: int = 12) -> dict[str, pd.DataFrame]:
    """Rows of one skill whose answers end in the label words 0 / 1."""
    out = {}
    for split in ("train", "val", "test"):
        out[split] = pd.DataFrame(
            {
                "id": [f"{split}/{i}" for i in range(rows_per_split)],
                "skill": "s",
                "prompt": [f"q{i}" for i in range(rows_per_split)],
                "answer": [f"x = val {i % 2}" for i in range(rows_per_split)],
            }
        )
    return out


def test_split_answer() -> None:
    assert split_answer("p", " 1 ", "whole") == ("p", "1")
    assert split_answer("p", "b = val 1", "last_word") == ("p b = val", "1")
    assert split_answer("p", "1", "last_word") == ("p", "1")
    with pytest.raises(SkillmixInputError, match="label_split"):
        split_answer("p", "1", "first_word")


def test_build_task_keeps_k_shot_per_label_and_the_first_eval_rows() -> None:
    task, words = build_task(frames(), "last_word", None, 3, 0, 5)
    assert words == ["0", "1"]
    train = task[task["split"] == "train"]
    assert train["label"].value_counts().to_dict() == {0: 3, 1: 3}
    assert (task["split"] == "val").sum() == (task["split"] == "test").sum() == 5
    assert task["prompt"].iloc[0].endswith("x = val")
    again, _ = build_task(frames(), "last_word", None, 3, 0, 5)
    pd.testing.assert_frame_equal(task, again)  # seeded
    with pytest.raises(SkillmixInputError, match="not label words"):
        build_task(frames(), "last_word", ["0", "2"], 3, 0, 5)
    with pytest.raises(SkillmixInputError, match="has no rows"):
        build_task({**frames(), "test": pd.DataFrame()}, "last_word", None, 3, 0, 5)


def features(task: pd.DataFrame, bounds: list[tuple[int, int]], c: int = 2) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    n, d = len(task), 6
    sgd, f0 = rng.normal(size=(n, c, d)), rng.normal(size=(n, c))
    sign = np.sign(sgd).astype(np.int8)
    return [
        {"rows": np.arange(a, b, dtype=np.int64), "f0": f0[a:b], "sgd": sgd[a:b], "sign": sign[a:b]}
        for a, b in bounds
    ]


def test_kernels_do_not_depend_on_the_shards_or_blocks() -> None:
    task, words = build_task(frames(), "last_word", None, 3, 0, 5)
    n = len(task)
    one = kernels_from_features(task, words, features(task, [(0, n)]), FORMULAS, 100, 100)
    three = kernels_from_features(task, words, features(task, [(0, 2), (2, 9), (9, n)]), FORMULAS, 2, 3)
    for formula in FORMULAS:
        assert sorted(one[formula]) == sorted(three[formula])
        np.testing.assert_array_equal(three[formula]["words"], ["0", "1"])
        for name, array in one[formula].items():
            if name != "words":
                np.testing.assert_allclose(three[formula][name], array, rtol=0, atol=1e-12)
    assert one["sgd"]["K_train"].shape == (6, 2, 6, 2)  # train × label words, twice
    assert one["sgd"]["K_val"].shape == (6, 2, 5, 2)
    with pytest.raises(SkillmixInputError, match="cover rows"):
        kernels_from_features(task, words, features(task, [(0, 2)]), FORMULAS, 2, 3)
    assert formula_transforms(["signgd"]) == ["sign"]
    with pytest.raises(SkillmixInputError, match="kernel.formulas"):
        formula_transforms(["magic"])


def test_solutions_next_to_fine_tuning(tmp_path: Path) -> None:
    task, words = build_task(frames(), "last_word", None, 3, 0, 5)
    kernels = kernels_from_features(task, words, features(task, [(0, len(task))]), FORMULAS, 4, 4)
    path = tmp_path / "sgd.npz"
    write_arrays(kernels["sgd"], path, stamp={"kernel": {"k_shot": 3}})
    data = read_arrays(path)
    assert sorted(data) == sorted(kernels["sgd"])  # the stamp is left out
    table = pd.concat(
        [
            initial_accuracy(path),
            solve_kernels(data, "sgd", ["lstsq", "logistic"], 0.01, True, 1.0, 0.5),
        ],
        ignore_index=True,
    )
    assert set(table["solver"]) == {"initial_model", "lstsq", "logistic"}
    assert set(table["split"]) == {"val", "test"}
    assert table["accuracy"].between(0, 1).all()
    finetuned = pd.DataFrame({"optimizer": ["sgd", "sgd"], "split": ["val", "test"], "accuracy": [0.8, 0.6]})
    comparison = side_by_side(table, finetuned)
    assert list(comparison.columns) == [
        "formula",
        "split",
        "lstsq_accuracy",
        "logistic_accuracy",
        "finetune_optimizer",
        "finetune_accuracy",
    ]
    assert comparison.set_index("split")["finetune_accuracy"].to_dict() == {"val": 0.8, "test": 0.6}
    with pytest.raises(SkillmixInputError, match="kernel.solvers"):
        solve_kernels(data, "sgd", ["magic"], 0.01, True, 1.0, 0.5)
