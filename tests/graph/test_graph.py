"""Tests of learned skills graphs: options, the losses of one unit, assembly from hand-made curves
(units: test_units.py; given graphs: test_given.py; the graph folder: test_graph_folder.py)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from skillmix.graph.learned import UnitCurve, assemble
from skillmix.graph.options import GraphOptions
from skillmix.graph.units import graph_units
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.slugs import skill_slug

# Three skills with awkward names; A, B, C below are these skills in this order.
SKILLS = ["skill A", "b/c", "ü"]
SLUGS = [skill_slug(name) for name in SKILLS]
A_, B_, C_ = SKILLS
a, b, c = SLUGS
STEPS = [0, 5, 10, 12]  # eval_every 5, last step 12: "end" = step 12, window 2 = steps 10 and 12

# Losses per unit and skill at STEPS. Step-0 losses are 4, 2, 1, except unit b's step-0 loss of
# skill A (4.02, "noise"), which checks that each unit's own step-0 value is used.
LOSSES: dict[str, dict[str, list[float]]] = {
    a: {A_: [4.0, 3.5, 3.0, 2.0], B_: [2.0, 2.0, 1.8, 1.6], C_: [1.0, 1.2, 1.3, 1.1]},
    b: {A_: [4.02, 4.1, 4.3, 4.4], B_: [2.0, 1.5, 1.2, 1.0], C_: [1.0, 0.9, 0.8, 0.9]},
    c: {A_: [4.0, 3.9, 3.8, 3.6], B_: [2.0, 2.1, 2.2, 2.4], C_: [1.0, 0.7, 0.6, 0.5]},
    f"{a}__{b}": {A_: [4.0, 3.6, 3.2, 2.4], B_: [2.0, 1.6, 1.2, 0.8], C_: [1.0, 1.0, 1.0, 1.0]},
    f"{a}__{c}": {A_: [4.0, 3.7, 3.4, 2.5], B_: [2.0, 2.0, 2.0, 2.0], C_: [1.0, 0.8, 0.7, 0.6]},
    f"{b}__{c}": {A_: [4.0, 4.0, 4.0, 4.0], B_: [2.0, 1.7, 1.4, 1.1], C_: [1.0, 0.8, 0.5, 0.4]},
}

# Hand-computed graphs (rows = trained on, columns = evaluated on; order A, B, C).
# linear, end: L_j(step 0 of unit i) - L_j(step 12 of unit i)
LINEAR_END = [[2.0, 0.4, -0.1], [-0.38, 1.0, 0.1], [0.4, -0.4, 0.5]]
# linear, window 2: L_j(step 0) - mean(L_j(step 10), L_j(step 12))
LINEAR_WINDOW = [[1.5, 0.3, -0.2], [-0.33, 0.9, 0.15], [0.3, -0.3, 0.45]]
# linear, relative end: LINEAR_END / L_j(step 0 of unit i)
LINEAR_END_REL = [[0.5, 0.2, -0.1], [-0.38 / 4.02, 0.5, 0.1], [0.1, -0.2, 0.5]]
# brute force, end: diagonal L_j(0) - L_j(j alone); off-diagonal L_j(j alone) - L_j(i with j).
# j alone at the end: A 2.0, B 1.0, C 0.5.
BF_END = [[2.0, 0.2, -0.1], [-0.4, 1.0, 0.1], [-0.5, -0.1, 0.5]]
# brute force, window 2: j alone A 2.5, B 1.1, C 0.55; pairs ab: A 2.8 B 1.0, ac: A 2.95 C 0.65,
# bc: B 1.25 C 0.45.
BF_WINDOW = [[1.5, 0.1, -0.1], [-0.3, 0.9, 0.1], [-0.45, -0.15, 0.45]]
# brute force, relative end: off-diagonal / L_j(j alone), diagonal / L_j(0).
BF_END_REL = [[0.5, 0.2, -0.2], [-0.2, 0.5, 0.2], [-0.25, -0.1, 0.5]]


def make_curve(unit: str, losses: dict[str, list[float]], steps: list[int] = STEPS) -> pd.DataFrame:
    records = [
        {"unit": unit, "step": step, "skill": skill, "loss": loss}
        for skill, values in losses.items()
        for step, loss in zip(steps, values, strict=True)
    ]
    return pd.DataFrame.from_records(records)


def curves_for(method: str, skills: list[str] = SKILLS) -> dict[str, pd.DataFrame]:
    """Curves keyed by graph_units' names for ``skills`` in the given order."""
    by_pair = {frozenset(unit.split("__")): values for unit, values in LOSSES.items()}
    units = graph_units(method, [skill_slug(s) for s in skills])
    return {unit: make_curve(unit, by_pair[frozenset(unit.split("__"))]) for unit in units}


def build(method: str, **options) -> np.ndarray:
    A, _ = assemble(method, SKILLS, SLUGS, curves_for(method), GraphOptions(**options))
    return A


# ------------------------------------------------------------------------------------------
# options


def test_options_from_config() -> None:
    options = GraphOptions.from_config(
        {"method": "linear", "h": 100, "measure": "window", "window": 3, "normalise": "relative",
         "clip_negative": True, "threshold": 0, "binary_edge_weight": 0.5, "diagonal": 1}
    )  # fmt: skip
    assert options == GraphOptions("window", 3, "relative", True, 0.0, 0.5, 1.0)
    assert GraphOptions.from_config({}) == GraphOptions()
    assert GraphOptions.from_config(None) == GraphOptions()
    assert GraphOptions().to_dict()["diagonal"] == "measured"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("measure", "mean"),
        ("window", 0),
        ("window", 1.5),
        ("window", True),
        ("normalise", "normalize"),
        ("clip_negative", "yes"),
        ("threshold", "0.1"),
        ("threshold", float("nan")),
        ("binary_edge_weight", 0),
        ("binary_edge_weight", True),
        ("diagonal", "one"),
        ("diagonal", float("inf")),
    ],
)
def test_options_rejects_bad_values(key: str, value) -> None:
    with pytest.raises(SkillmixInputError, match=rf"graph\.assemble\.{key}"):
        GraphOptions.from_config({key: value})


# ------------------------------------------------------------------------------------------
# losses of one unit


def test_unit_curve_losses_before_and_after() -> None:
    curve = make_curve(b, LOSSES[b]).sample(frac=1.0, random_state=0)  # row order must not matter

    def unit(**options) -> UnitCurve:
        return UnitCurve(b, curve, GraphOptions(**options))

    assert unit().before(A_) == 4.02
    assert unit().after(A_) == 4.4
    assert unit(measure="window", window=2).after(A_) == pytest.approx(4.35)
    assert unit(measure="window", window=3).after(A_) == pytest.approx((4.1 + 4.3 + 4.4) / 3)
    assert unit(measure="window", window=1).after(A_) == 4.4
    with pytest.raises(SkillmixInputError, match="graph.assemble.window needs 4"):
        unit(measure="window", window=4).after(A_)
    with pytest.raises(SkillmixInputError, match=r"no loss for skill 'nope'"):
        unit().after("nope")
    with pytest.raises(SkillmixInputError, match="step-0"):
        UnitCurve(b, curve[curve["step"] > 0], GraphOptions()).before(A_)


# ------------------------------------------------------------------------------------------
# assembly


@pytest.mark.parametrize(
    ("method", "options", "expected"),
    [
        ("linear", {}, LINEAR_END),
        ("linear", {"measure": "window", "window": 2}, LINEAR_WINDOW),
        ("linear", {"normalise": "relative"}, LINEAR_END_REL),
        ("brute_force", {}, BF_END),
        ("brute_force", {"measure": "window", "window": 2}, BF_WINDOW),
        ("brute_force", {"normalise": "relative"}, BF_END_REL),
        # relative + window, brute force: off-diagonal / L_j(j alone, window), diagonal / L_j(0)
        (
            "brute_force",
            {"measure": "window", "normalise": "relative"},
            [
                [1.5 / 4, 0.1 / 1.1, -0.1 / 0.55],
                [-0.3 / 2.5, 0.9 / 2, 0.1 / 0.55],
                [-0.45 / 2.5, -0.15 / 1.1, 0.45],
            ],
        ),
        # clip: negatives -> 0
        ("brute_force", {"clip_negative": True}, [[2.0, 0.2, 0.0], [0.0, 1.0, 0.1], [0.0, 0.0, 0.5]]),
        ("linear", {"clip_negative": True}, [[2.0, 0.4, 0.0], [0.0, 1.0, 0.1], [0.4, 0.0, 0.5]]),
        # threshold: off-diagonal <= t -> 0; the diagonal (0.5 <= 0.6) is kept
        ("brute_force", {"threshold": 0.6}, [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]]),
        ("brute_force", {"threshold": 0.15}, [[2.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]]),
        # a negative threshold keeps negatives above it
        ("brute_force", {"threshold": -0.2}, [[2.0, 0.2, -0.1], [0.0, 1.0, 0.1], [0.0, -0.1, 0.5]]),
        (
            "linear",
            {"clip_negative": True, "threshold": 0.2},
            [[2.0, 0.4, 0.0], [0.0, 1.0, 0.0], [0.4, 0.0, 0.5]],
        ),
        # the paper's LEGO-style 0 / 0.5 / 1 graph
        (
            "brute_force",
            {"binary_edge_weight": 0.5, "diagonal": 1},
            [[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]],
        ),
        (
            "linear",
            {"binary_edge_weight": 0.5, "diagonal": 1.0},
            [[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.5, 0.0, 1.0]],
        ),
        # binary after threshold: 0.1 edges fall below 0.15 first
        (
            "brute_force",
            {"threshold": 0.15, "binary_edge_weight": 0.5, "diagonal": 1},
            [[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        ),
        # binary with a measured diagonal keeps the diagonal
        (
            "brute_force",
            {"binary_edge_weight": 1.0},
            [[2.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.5]],
        ),
        # a number replaces the measured diagonal, off-diagonal untouched
        ("brute_force", {"diagonal": 0.0}, [[0.0, 0.2, -0.1], [-0.4, 0.0, 0.1], [-0.5, -0.1, 0.0]]),
        ("linear", {"diagonal": -2}, [[-2.0, 0.4, -0.1], [-0.38, -2.0, 0.1], [0.4, -0.4, -2.0]]),
    ],
)
def test_assemble_matches_hand_values(method: str, options: dict, expected: list[list[float]]) -> None:
    A = build(method, **options)
    assert A.dtype == np.float64 and A.shape == (3, 3)
    np.testing.assert_allclose(A, np.array(expected), rtol=0, atol=1e-12)


def test_clip_applies_to_a_negative_diagonal() -> None:
    losses = {skill: [v[0], v[1], v[2], v[0] + 1.0] for skill, v in LOSSES[a].items()}  # all get worse
    curves = {a: make_curve(a, losses)}
    A, _ = assemble("linear", [A_], [a], curves, GraphOptions())
    assert A[0, 0] == pytest.approx(-1.0)
    A, _ = assemble("linear", [A_], [a], curves, GraphOptions(clip_negative=True))
    assert A[0, 0] == 0.0


def test_assemble_raw_table() -> None:
    curves = curves_for("brute_force")
    curves["unrelated"] = make_curve("unrelated", LOSSES[a])
    _, raw = assemble("brute_force", SKILLS, SLUGS, curves, GraphOptions())
    assert list(raw.columns) == ["unit", "step", "skill", "loss"]
    assert list(pd.unique(raw["unit"])) == graph_units("brute_force", SLUGS)
    assert len(raw) == 6 * 3 * len(STEPS)
    assert raw["step"].dtype == np.int64 and raw["loss"].dtype == np.float64
    assert set(raw["skill"]) == set(SKILLS)


@pytest.mark.parametrize("method", ["linear", "brute_force"])
@pytest.mark.parametrize("order", [[2, 0, 1], [1, 2, 0], [2, 1, 0]])
def test_assemble_is_independent_of_skill_order(method: str, order: list[int]) -> None:
    skills = [SKILLS[i] for i in order]
    slugs = [SLUGS[i] for i in order]
    curves = curves_for(method, skills)  # pair units named as graph_units names them for this order
    if method == "brute_force" and order[0] == 2:
        assert f"{c}__{a}" in curves and f"{a}__{c}" not in curves
    options = GraphOptions(normalise="relative")
    A, _ = assemble(method, skills, slugs, curves, options)
    reference = build(method, normalise="relative")
    np.testing.assert_allclose(A, reference[np.ix_(order, order)], rtol=0, atol=1e-12)


def test_assemble_missing_unit_names_it() -> None:
    curves = curves_for("brute_force")
    del curves[f"{a}__{c}"]
    with pytest.raises(SkillmixInputError, match=re.escape(f"'{a}__{c}'")):
        assemble("brute_force", SKILLS, SLUGS, curves, GraphOptions())
    # the pair named the other way round is not accepted as a substitute
    curves[f"{c}__{a}"] = make_curve(f"{c}__{a}", LOSSES[f"{a}__{c}"])
    with pytest.raises(SkillmixInputError, match=re.escape(f"'{a}__{c}'")):
        assemble("brute_force", SKILLS, SLUGS, curves, GraphOptions())
    curves = curves_for("linear")
    del curves[b]
    with pytest.raises(SkillmixInputError, match=re.escape(f"'{b}'")):
        assemble("linear", SKILLS, SLUGS, curves, GraphOptions())


def test_assemble_missing_skill_names_unit_and_skill() -> None:
    curves = curves_for("linear")
    curves[c] = curves[c][curves[c]["skill"] != B_]
    with pytest.raises(
        SkillmixInputError, match=re.escape(f"graph unit '{c}': curve has no loss for skill 'b/c'")
    ):
        assemble("linear", SKILLS, SLUGS, curves, GraphOptions())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_assemble_non_finite_loss_names_unit_and_skill(bad: float) -> None:
    curves = curves_for("brute_force")
    unit = f"{b}__{c}"
    curve = curves[unit].copy()
    curve.loc[(curve["skill"] == C_) & (curve["step"] == 12), "loss"] = bad
    curves[unit] = curve
    with pytest.raises(SkillmixInputError, match=re.escape(f"graph unit '{unit}'") + ".*'ü'.*not finite"):
        assemble("brute_force", SKILLS, SLUGS, curves, GraphOptions())


def test_assemble_input_errors() -> None:
    curves = curves_for("linear")
    with pytest.raises(SkillmixInputError, match="slugs"):
        assemble("linear", SKILLS, SLUGS[:2], curves, GraphOptions())
    with pytest.raises(SkillmixInputError, match=r"graph\.method"):
        assemble("magic", SKILLS, SLUGS, curves, GraphOptions())
    with pytest.raises(SkillmixInputError, match="load_given"):
        assemble("given", SKILLS, SLUGS, curves, GraphOptions())
    with pytest.raises(SkillmixInputError, match="graph.gradient"):
        assemble("gradient", SKILLS, SLUGS, curves, GraphOptions())
    wrong = dict(curves)
    wrong[a] = make_curve(b, LOSSES[a])  # curve of another unit under a's key
    with pytest.raises(SkillmixInputError, match="unit column"):
        assemble("linear", SKILLS, SLUGS, wrong, GraphOptions())
    wrong = dict(curves)
    wrong[a] = curves[a].drop(columns=["loss"])
    with pytest.raises(SkillmixInputError, match="lacks column"):
        assemble("linear", SKILLS, SLUGS, wrong, GraphOptions())
    wrong = dict(curves)
    wrong[a] = pd.concat([curves[a], curves[a].iloc[:1]])
    with pytest.raises(SkillmixInputError, match="more than one loss"):
        assemble("linear", SKILLS, SLUGS, wrong, GraphOptions())
    zero = {skill: [0.0, 0.0, 0.0, 0.0] for skill in SKILLS}
    wrong = dict(curves)
    wrong[a] = make_curve(a, zero)
    with pytest.raises(SkillmixInputError, match="positive loss"):
        assemble("linear", SKILLS, SLUGS, wrong, GraphOptions(normalise="relative"))


# ------------------------------------------------------------------------------------------
# steps to a target loss (Skill-It's LEGO/Addition rule)


def test_steps_to_target_edges() -> None:
    """An edge i -> j exactly when the mix reaches the target on j at an earlier evaluation."""
    skills, slugs = ["x", "y", "z"], ["x", "y", "z"]
    steps = [0, 10, 20, 30]
    losses = {
        "x": {"x": [3, 0.04, 0.01, 0.01], "y": [3, 2, 2, 2], "z": [3, 2, 2, 2]},
        "y": {"x": [3, 2, 2, 2], "y": [3, 0.7, 0.7, 0.7], "z": [3, 2, 2, 2]},  # y alone never
        "z": {"x": [3, 2, 2, 2], "y": [3, 2, 2, 2], "z": [3, 0.5, 0.04, 0.01]},  # z alone at 20
        "x__y": {"x": [3, 0.3, 0.04, 0.01], "y": [3, 0.6, 0.04, 0.01], "z": [3, 2, 2, 2]},
        "x__z": {"x": [3, 0.04, 0.02, 0.01], "y": [3, 2, 2, 2], "z": [3, 0.5, 0.05, 0.01]},
        "y__z": {"x": [3, 2, 2, 2], "y": [3, 0.7, 0.7, 0.7], "z": [3, 0.04, 0.01, 0.01]},
    }
    curves = {unit: make_curve(unit, values, steps) for unit, values in losses.items()}
    options = GraphOptions(measure="steps_to_target", target_loss=0.05)
    A, _ = assemble("brute_force", skills, slugs, curves, options)
    # x helps y (y alone never reaches 0.05, with x at step 20); the x, z mix reaches z at 20
    # like z alone (not sooner: no edge); y with z reaches z at 10 < 20 (edge y -> z); the
    # mixes reach x no sooner than x alone (10) and y not at all with z.
    assert A.tolist() == [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
    weighted = GraphOptions(measure="steps_to_target", target_loss=0.05, binary_edge_weight=0.5)
    A, _ = assemble("brute_force", skills, slugs, curves, weighted)
    assert A.tolist() == [[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]
    with pytest.raises(SkillmixInputError, match="needs graph.method brute_force"):
        assemble("linear", skills, slugs, {u: curves[u] for u in skills}, options)
    with pytest.raises(SkillmixInputError, match="graph.assemble.target_loss"):
        GraphOptions(measure="steps_to_target", target_loss=0)


def test_repeats_earliest_step_and_mean_loss() -> None:
    """A unit run twice counts with its earliest step to the target and the mean of its losses."""
    skills, slugs = ["x", "y"], ["x", "y"]
    steps = [0, 10, 20, 30]
    losses = {
        # repeat 0 / repeat 1
        "x": (
            {"x": [3, 0.04, 0.01, 0.01], "y": [3, 2, 2, 2]},
            {"x": [3, 0.5, 0.04, 0.01], "y": [3, 2, 2, 2]},
        ),
        "y": ({"x": [3, 2, 2, 2], "y": [3, 0.7, 0.7, 0.7]}, {"x": [3, 2, 2, 2], "y": [3, 0.7, 0.7, 0.3]}),
        # the mix reaches y in its second repeat only: still an edge x -> y
        "x__y": (
            {"x": [3, 1, 1, 0.01], "y": [3, 0.7, 0.7, 0.7]},
            {"x": [3, 1, 1, 0.01], "y": [3, 0.6, 0.04, 0.01]},
        ),
    }
    curves = {
        unit: pd.concat(
            [make_curve(unit, values, steps).assign(repeat=r) for r, values in enumerate(pair)],
            ignore_index=True,
        )
        for unit, pair in losses.items()
    }
    A, raw = assemble(
        "brute_force", skills, slugs, curves, GraphOptions(measure="steps_to_target", target_loss=0.05)
    )
    assert A.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    assert list(raw.columns) == ["unit", "repeat", "step", "skill", "loss"]
    assert sorted(raw["repeat"].unique().tolist()) == [0, 1] and len(raw) == 3 * 2 * 2 * 4
    # measure end: y alone ends at mean(0.7, 0.3) = 0.5, the mix at mean(0.7, 0.01) = 0.355
    A, _ = assemble("brute_force", skills, slugs, curves, GraphOptions(measure="end"))
    assert A[0, 1] == pytest.approx(0.5 - 0.355)
    assert A[1, 1] == pytest.approx(3 - 0.5)
    # a curve without the column is one repeat, and raw then gets repeat 0 for it
    mixed = {**curves, "x": make_curve("x", losses["x"][0], steps)}
    _, raw = assemble("brute_force", skills, slugs, mixed, GraphOptions(measure="end"))
    assert raw[raw["unit"] == "x"]["repeat"].eq(0).all()
    # repeats evaluated at different steps cannot be averaged
    uneven = curves["y"].copy()
    uneven.loc[(uneven["repeat"] == 1) & (uneven["step"] == 30), "step"] = 40
    with pytest.raises(SkillmixInputError, match="'y'.*different steps"):
        assemble("brute_force", skills, slugs, {**curves, "y": uneven}, GraphOptions(measure="end"))
