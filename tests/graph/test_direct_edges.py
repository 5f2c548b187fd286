"""The second clause of Skill-It's LEGO/Addition rule (`graph.assemble.direct_edges`): an edge
i -> j also when training on i alone lowers j's loss (skillit.md §2), on hand-made curves."""

from __future__ import annotations

import pandas as pd
import pytest

from skillmix.graph.learned import assemble
from skillmix.graph.options import GraphOptions
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError

SKILLS = ["x", "y", "z"]
STEPS = [0, 10, 20, 30]
# The pair runs are those of test_graph.py's steps-to-target test (edges x -> y and y -> z).
# The single runs: x alone ends y below its step-0 loss (2.9 < 3) and z above it; y alone lowers
# x and leaves z where it was (3 = 3: not lowered); z alone lowers y (2.99 < 3), not x.
LOSSES = {
    "x": {"x": [3, 0.04, 0.01, 0.01], "y": [3, 2.5, 2.6, 2.9], "z": [3, 3.1, 3.2, 3.5]},
    "y": {"x": [3, 2, 2, 2], "y": [3, 0.7, 0.7, 0.7], "z": [3, 3, 3, 3]},
    "z": {"x": [3, 3.2, 3.1, 3.05], "y": [3, 2, 2.5, 2.99], "z": [3, 0.5, 0.04, 0.01]},
    "x__y": {"x": [3, 0.3, 0.04, 0.01], "y": [3, 0.6, 0.04, 0.01], "z": [3, 2, 2, 2]},
    "x__z": {"x": [3, 0.04, 0.02, 0.01], "y": [3, 2, 2, 2], "z": [3, 0.5, 0.05, 0.01]},
    "y__z": {"x": [3, 2, 2, 2], "y": [3, 0.7, 0.7, 0.7], "z": [3, 0.04, 0.01, 0.01]},
}


def curve(unit: str, losses: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"unit": unit, "step": step, "skill": skill, "loss": float(loss)}
            for skill, values in losses.items()
            for step, loss in zip(STEPS, values, strict=True)
        ]
    )


CURVES = {unit: curve(unit, values) for unit, values in LOSSES.items()}


def graph(**options) -> list[list[float]]:
    opts = GraphOptions(measure="steps_to_target", target_loss=0.05, **options)
    return assemble("brute_force", SKILLS, SKILLS, CURVES, opts)[0].tolist()


def test_direct_edges_add_the_second_clause() -> None:
    first_clause = [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
    assert graph() == first_clause  # the default: the first clause only
    assert graph(direct_edges=False) == first_clause
    # new: y -> x (y alone lowers x) and z -> y (z alone lowers y); x -> y already an edge;
    # x -> z (x alone raises z), z -> x (raises x) and y -> z's own clause: unchanged
    assert graph(direct_edges=True) == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    assert graph(direct_edges=True, binary_edge_weight=0.5) == [
        [1.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 1.0]
    ]  # fmt: skip


def test_direct_edges_use_the_mean_over_repeats() -> None:
    """With repeats, "lowers" compares the repeats' mean losses at the last and at step 0."""
    second = {**LOSSES["y"], "x": [3, 2, 2, 4.5]}  # mean at the end (2 + 4.5) / 2 > 3
    repeated = {
        **CURVES,
        "y": pd.concat(
            [CURVES["y"].assign(repeat=0), curve("y", second).assign(repeat=1)], ignore_index=True
        ),
    }
    opts = GraphOptions(measure="steps_to_target", target_loss=0.05, direct_edges=True)
    assert assemble("brute_force", SKILLS, SKILLS, repeated, opts)[0][1, 0] == 0.0


def test_direct_edges_setting() -> None:
    assert complete("graph", None)["assemble"]["direct_edges"] is False
    assert GraphOptions.from_config({"measure": "steps_to_target", "direct_edges": True}).direct_edges
    assert "direct_edges" in GraphOptions().to_dict()
    with pytest.raises(SkillmixInputError, match=r"graph\.assemble\.direct_edges.*steps_to_target"):
        GraphOptions(measure="end", direct_edges=True)
    with pytest.raises(SkillmixInputError, match=r"graph\.assemble\.direct_edges"):
        GraphOptions(measure="steps_to_target", direct_edges="yes")
