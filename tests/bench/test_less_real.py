"""Tests of the pure helpers of bench/less_real.py: the chat builders, the balanced draw, the
GSM8K final answer, the verdict against random and the summary table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from skillmix.data.sources import COLUMNS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from less_real import (  # noqa: E402
    BEATS,
    WITHIN,
    WORSE,
    alpaca_frame,
    balanced,
    final_number,
    gsm8k_frame,
    paired,
    sst2_frame,
    summarize,
    verdict,
)


def test_chat_builders_write_user_then_assistant_rows() -> None:
    gsm = gsm8k_frame([{"question": "1+1?", "answer": "1+1=2\n#### 2"}], [0], "train")
    assert list(gsm.columns) == COLUMNS
    row = gsm.iloc[0]
    assert (row.id, row.skill, row.prompt, row.answer) == (
        "gsm8k-train-00000",
        "gsm8k",
        "1+1?",
        "1+1=2\n#### 2",
    )
    turns = json.loads(row.messages)
    assert [t["role"] for t in turns] == ["user", "assistant"]

    sst = sst2_frame(pd.DataFrame({"label": ["0", "1"], "sentence": ["dull .", "great fun"]}), "train")
    assert sst["answer"].tolist() == ["negative", "positive"]
    assert sst["prompt"].iloc[1].endswith("\n\ngreat fun")
    assert sst["prompt"].iloc[1].startswith("Is the sentiment of this sentence positive or negative?")
    dev = sst2_frame(pd.DataFrame({"label": ["1"], "content": ["fine"]}), "dev")
    assert dev["id"].iloc[0] == "sst2-dev-00000"

    tasks = [
        {"id": "seed_task_0", "instruction": "Say hi.", "instances": [{"input": "", "output": "hi "}]},
        {"id": "seed_task_1", "instruction": "Add.", "instances": [{"input": "1, 2", "output": "3"}]},
    ]
    alp = alpaca_frame(tasks)
    assert alp["prompt"].tolist() == ["Say hi.", "Add.\n\n1, 2"]
    assert alp["answer"].tolist() == ["hi", "3"]
    assert set(alp["skill"]) == {"alpaca"} and alp["id"].is_unique


def test_balanced_takes_turns_over_labels() -> None:
    frame = pd.DataFrame({"answer": ["a"] * 10 + ["b"] * 3, "x": range(13)})
    got = balanced(frame, 6, np.random.default_rng(0))
    assert got["answer"].value_counts().to_dict() == {"a": 3, "b": 3}
    got = balanced(frame, 8, np.random.default_rng(0))
    assert got["answer"].value_counts().to_dict() == {"a": 5, "b": 3}  # b runs out
    assert got.index.is_unique


def test_final_number() -> None:
    assert final_number("so 3 + 4 = 7\n#### 7") == "7"
    assert final_number("#### 1,234") == "1234"
    assert final_number("#### $5.00.") == "5"
    assert final_number("#### -2.5") == "-2.5"
    assert final_number("#### 3 then #### 4") == "4"
    assert final_number("the answer is 7") is None


def test_verdict() -> None:
    assert verdict([0.5, 0.6, 0.4], 0.1, 0.1) == BEATS
    assert verdict([0.1, 0.2, 0.0], 0.1, 0.1) == WITHIN
    assert verdict([-0.5, -0.6, -0.4], 0.1, 0.1) == WORSE
    assert verdict([0.15], 0.05, float("nan")) == BEATS  # a one-value method has sd 0
    assert verdict([0.5], float("nan"), 0.0).startswith("n/a")


def test_paired_and_summary() -> None:
    rows = pd.DataFrame(
        {
            "setting": ["s"] * 8,
            "method": ["base", "random", "random", "random", "less", "less", "less", "full"],
            "seed": [np.nan, 0, 1, 2, 0, 1, 2, 0],
            "target_loss": [2.0, 1.5, 1.6, 1.4, 1.0, 1.1, 0.9, 0.8],
            "accuracy": [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.9],
            "own_share": [np.nan, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.1],
        }
    )
    assert np.allclose(paired(rows, "less", "target_loss"), [0.5, 0.5, 0.5])
    assert np.allclose(paired(rows, "base", "target_loss"), [-0.5, -0.4, -0.6])
    assert np.allclose(paired(rows, "full", "target_loss"), [0.7])
    text = summarize(rows)
    less_line = next(line for line in text.splitlines() if line.startswith("| less "))
    assert BEATS in less_line and "1.0000 ± 0.1000" in less_line
    base_line = next(line for line in text.splitlines() if line.startswith("| base "))
    assert WORSE in base_line
