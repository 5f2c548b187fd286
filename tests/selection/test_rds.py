"""RDS+ (skillmix.selection.rds, skillmix.engine.hidden_states): pooling, cosine, per-task
aggregation and the round robin, on small cases computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from skillmix.engine.hidden_states import pool, pooled_states, token_weights
from skillmix.engine.modeling import load_model, select_runtime
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.registry import SELECTIONS
from skillmix.selection.evaluation import selection_costs
from skillmix.selection.rds import (
    RdsSelector,
    cosine,
    hidden_states_job,
    round_robin,
    score_table,
    scores_job,
    task_scores,
)

TINY = {
    "kind": "tiny",
    "seed": 0,
    "tiny": {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "max_positions": 64,
    },
    "max_length": 64,
    "device": "cpu",
    "precision": "fp32",
}


def test_token_weights_skip_padding() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    weighted = token_weights(mask, "weighted_mean")
    assert torch.allclose(
        weighted,
        torch.tensor([[1, 2, 3, 0], [1, 2, 0, 0]], dtype=torch.float64)
        / torch.tensor([[6.0], [3.0]], dtype=torch.float64),
    )
    mean = token_weights(mask, "mean")
    assert torch.allclose(mean[0], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0], dtype=torch.float64))
    last = token_weights(mask, "last")
    assert last.tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    # left padding: positions count over the example's own tokens
    left = token_weights(torch.tensor([[0, 1, 1]]), "weighted_mean")
    assert torch.allclose(left, torch.tensor([[0, 1 / 3, 2 / 3]], dtype=torch.float64))
    with pytest.raises(SkillmixInputError, match="pooling"):
        token_weights(mask, "max")
    with pytest.raises(SkillmixInputError, match="no tokens"):
        token_weights(torch.tensor([[0, 0]]), "mean")


def test_pool_ignores_what_sits_on_padding() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], [[3.0, 3.0], [1e6, -1e6], [7.0, 7.0]]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = pool(hidden, mask, "weighted_mean")
    # (1·[1,0] + 2·[0,1] + 3·[2,2]) / 6 ; the second example is its one token
    assert torch.allclose(out, torch.tensor([[7 / 6, 8 / 6], [3.0, 3.0]]))


def test_pooled_states_do_not_depend_on_the_batch() -> None:
    model, tokenizer = load_model(TINY)
    runtime = select_runtime("cpu", "fp32")
    texts = ["a b c d e f", "x", "some longer text here", "q r"]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    ids[1] = ids[1][:1]  # a one-token example
    together = pooled_states(
        model, runtime, tokenizer.pad_token_id, ids, batch_size=4, pooling="weighted_mean"
    )
    alone = np.concatenate(
        [
            pooled_states(model, runtime, tokenizer.pad_token_id, [x], batch_size=1, pooling="weighted_mean")
            for x in ids
        ]
    )
    assert together.shape == (4, 16) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # the last-token state of a one-token example is its weighted mean
    last = pooled_states(model, runtime, tokenizer.pad_token_id, ids, batch_size=3, pooling="last")
    np.testing.assert_allclose(last[1], together[1], atol=1e-5)
    assert not np.allclose(last[0], together[0])


def test_cosine_by_hand() -> None:
    sims = cosine(np.array([[1.0, 0.0], [3.0, 3.0]]), np.array([[2.0, 0.0], [0.0, -1.0], [1.0, 1.0]]))
    np.testing.assert_allclose(
        sims, [[1, 0, 1 / math.sqrt(2)], [1 / math.sqrt(2), -1 / math.sqrt(2), 1]], atol=1e-6
    )


def test_task_scores_take_the_best_example_of_each_task() -> None:
    candidates = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = np.array([[1.0, 0.0], [0.0, -1.0], [0.0, 2.0]])
    scores = task_scores(candidates, targets, ["A", "A", "B"], chunk_rows=2)
    assert list(scores) == ["A", "B"]
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(scores["A"], [1.0, 0.0, r], atol=1e-6)  # max(cos with [1,0], cos with [0,-1])
    np.testing.assert_allclose(scores["B"], [0.0, 1.0, r], atol=1e-6)
    assert list(task_scores(candidates, targets, ["A", "A", "B"], tasks=["B", "A"])) == ["B", "A"]


def test_a_target_without_examples_is_named() -> None:
    candidates, targets = np.eye(2), np.eye(2)
    with pytest.raises(SkillmixInputError, match=r"target 'lego-9' has no examples"):
        task_scores(candidates, targets, ["A", "A"], tasks=["A", "lego-9"])
    with pytest.raises(SkillmixInputError, match="every target"):
        task_scores(candidates, np.zeros((0, 2)), [])


def test_round_robin_takes_turns_and_spends_a_turn_on_a_taken_row() -> None:
    ids = ["a", "b", "c", "d"]
    scores = {"A": np.array([0.9, 0.8, 0.1, 0.0]), "B": np.array([0.95, 0.2, 0.7, 0.6])}
    # turn 1: A takes a, B's best (a) is taken, its turn is spent; turn 2: A takes b, B takes c
    assert round_robin(ids, scores, 3) == ([0, 1, 2], ["A", "A", "B"])
    assert round_robin(ids, scores, 4) == ([0, 1, 2, 3], ["A", "A", "B", "B"])
    # tasks go in the order given: B takes a, A's turn is spent on a, B takes c
    assert round_robin(ids, {"B": scores["B"], "A": scores["A"]}, 2) == ([0, 2], ["B", "B"])


def test_round_robin_ties_and_non_finite_scores() -> None:
    ids = ["z", "y", "x"]
    assert round_robin(ids, {"A": np.array([0.5, 0.5, 0.5])}, 3) == ([2, 1, 0], ["A", "A", "A"])
    taken, _ = round_robin(ids, {"A": np.array([0.5, np.nan, -np.inf])}, 3)
    assert taken == [0]
    assert round_robin(ids, {"A": np.zeros(3)}, 0) == ([], [])


def _pool(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(n)],
            "skill": ["s1", "s2"] * (n // 2),
            "prompt": [f"question {i}" for i in range(n)],
            "answer": [str(i % 3) for i in range(n)],
            "text": [f"question {i} {i % 3}" for i in range(n)],
        }
    )


def test_selector_is_registered_and_selects_round_robin() -> None:
    assert SELECTIONS["rds"].needs == frozenset({"hidden_states"})
    assert SELECTIONS["rds"].load() is RdsSelector
    pool = _pool(4).rename(index=lambda i: i)
    scores = score_table(pool, {"A": np.array([0.9, 0.8, 0.1, 0.0]), "B": np.array([0.95, 0.2, 0.7, 0.6])})
    assert list(scores.columns) == ["id", "skill", "score", "score_A", "score_B"]
    np.testing.assert_allclose(scores["score"], [0.95, 0.8, 0.7, 0.6])
    selector = RdsSelector({"selection": {"k": 3, "fraction": None, "seed": 0, "balance": "none"}})
    chosen = selector.select(pool, selector.size(len(pool)), scores=scores)
    assert chosen["id"].tolist() == ["p0", "p1", "p2"] and chosen["rank"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(chosen["score"], [0.9, 0.8, 0.7])
    assert list(chosen.columns[:2]) == ["rank", "score"]
    with pytest.raises(SkillmixInputError, match="scores"):
        selector.select(pool, 2)
    with pytest.raises(SkillmixInputError, match="stale"):
        selector.select(pool.iloc[::-1].reset_index(drop=True), 2, scores=scores)


def test_hidden_states_and_scores_jobs(tmp_path) -> None:
    pool = _pool(6)
    target = _pool(4).assign(id=lambda f: [f"t{i}" for i in range(4)], skill=["A", "A", "B", "B"])
    pool.to_parquet(tmp_path / "pool.parquet")
    target.to_parquet(tmp_path / "target.parquet")
    rds = {"pooling": "weighted_mean", "batch_size": 4}
    for name in ("pool", "target"):
        hidden_states_job(
            tmp_path / f"{name}.parquet",
            tmp_path / f"{name}.npy",
            tmp_path / f"{name}_index.parquet",
            tmp_path / f"{name}_info.json",
            what=name,
            model_cfg=TINY,
            rds_cfg=rds,
        )
    states = np.load(tmp_path / "pool.npy")
    assert states.shape == (6, 16)
    info = json.loads((tmp_path / "pool_info.json").read_text())
    assert info["rows"] == 6 and info["pooling"] == "weighted_mean" and info["wall_seconds"] >= 0
    pairs = [(tmp_path / f"{n}.npy", tmp_path / f"{n}_index.parquet") for n in ("pool", "target")]
    table = scores_job(
        tmp_path / "pool.parquet", pairs[0], pairs[1], tmp_path / "scores.parquet", tasks=["A", "B"]
    )
    assert list(table.columns) == ["id", "skill", "score", "score_A", "score_B"]
    direct = cosine(states, np.load(tmp_path / "target.npy"))
    np.testing.assert_allclose(table["score_A"], direct[:, :2].max(axis=1), atol=1e-6)
    assert pd.read_parquet(tmp_path / "scores.parquet")["id"].tolist() == pool["id"].tolist()


def test_bad_targets_stop_before_anything_is_written(tmp_path) -> None:
    _pool(0).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(SkillmixInputError, match="the target set has no examples"):
        hidden_states_job(
            tmp_path / "empty.parquet",
            tmp_path / "s.npy",
            tmp_path / "i.parquet",
            tmp_path / "i.json",
            what="target set",
            model_cfg=TINY,
            rds_cfg={},
        )
    assert not list(tmp_path.glob("s.npy*")) and not (tmp_path / "i.parquet").exists()
    pool = _pool(2)
    pool.to_parquet(tmp_path / "pool.parquet")
    np.save(tmp_path / "p.npy", np.eye(2, dtype=np.float32))
    pool[["id", "skill"]].to_parquet(tmp_path / "p.parquet")
    np.save(tmp_path / "t.npy", np.eye(2, dtype=np.float32)[:1])
    pd.DataFrame({"id": ["t0"], "skill": ["A"]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(SkillmixInputError, match="target 'lego-3' has no examples"):
        scores_job(
            tmp_path / "pool.parquet",
            (tmp_path / "p.npy", tmp_path / "p.parquet"),
            (tmp_path / "t.npy", tmp_path / "t.parquet"),
            tmp_path / "scores.parquet",
            tasks=["A", "lego-3"],
        )
    assert not (tmp_path / "scores.parquet").exists()


def test_selection_costs_sum_each_stage(tmp_path) -> None:
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = {}
    for name, (s, rss, cpu) in {
        "w": (10.0, 500, 9.0),
        "g1": (2.0, 300, 1.5),
        "g2": (3.0, 800, 2.5),
        "h": (1.5, 200, 1.0),
    }.items():
        path = tmp_path / f"{name}.tsv"
        path.write_text(header + f"{s}\t0:00:{int(s):02d}\t{rss}\t0\t0\t0\t0\t0\t0\t{cpu}\n")
        files[name] = str(path)
    costs = selection_costs(
        ["less", "random", "rds"],
        {
            "less": {"warmup": [files["w"]], "grads": [files["g1"], files["g2"]]},
            "rds": {"hidden_states": [files["h"]]},
        },
    )
    total = costs[costs["stage"] == "total"].set_index("selection")
    assert total.loc["less", "wall_seconds"] == 15.0 and total.loc["less", "jobs"] == 3
    assert total.loc["less", "max_rss_mb"] == 800 and total.loc["less", "cpu_seconds"] == 13.0
    assert total.loc["rds", "wall_seconds"] == 1.5 and total.loc["random", "jobs"] == 0
    grads = costs[(costs["selection"] == "less") & (costs["stage"] == "grads")].iloc[0]
    assert grads["jobs"] == 2 and grads["wall_seconds"] == 5.0
