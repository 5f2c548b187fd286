"""Tests of skills graphs: units, assembly from hand-made curves, given graphs, graph files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skillmix.graph.given import load_given
from skillmix.graph.learned import GraphOptions, UnitCurve, assemble
from skillmix.graph.store import plot_heatmap, read_graph, write_graph
from skillmix.graph.units import METHODS, UNIT_PATTERN, graph_units, unit_slugs
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.slugs import skill_slug

SHARED_DATA = Path(
    os.environ.get("SKILLMIX_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
NI_METADATA = SHARED_DATA / "skillit_ni_metadata"

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
# units


@pytest.mark.parametrize("k", range(1, 7))
def test_graph_units_counts_and_pattern(k: int) -> None:
    slugs = [f"s{i}" if i % 2 else f"skill_{i}-x" for i in range(k)]
    brute = graph_units("brute_force", slugs)
    linear = graph_units("linear", slugs)
    assert len(brute) == k + k * (k - 1) // 2 == len(set(brute))
    assert linear == slugs
    assert brute[:k] == slugs
    assert graph_units("given", slugs) == []
    for unit in brute:
        assert re.fullmatch(UNIT_PATTERN, unit)
        parts = unit_slugs(unit)
        assert "__".join(parts) == unit
        assert all(part in slugs for part in parts)
    pairs = [unit_slugs(unit) for unit in brute[k:]]
    assert all(slugs.index(x) < slugs.index(y) for x, y in pairs)  # i before j in skill order


def test_graph_units_real_slugs_and_pair_naming() -> None:
    units = graph_units("brute_force", SLUGS)
    assert units == [a, b, c, f"{a}__{b}", f"{a}__{c}", f"{b}__{c}"]
    assert all(re.fullmatch(UNIT_PATTERN, u) for u in units)
    reordered = graph_units("brute_force", [c, a, b])
    assert f"{c}__{a}" in reordered and f"{a}__{c}" not in reordered  # only one name per pair
    assert unit_slugs(a) == [a]
    assert unit_slugs(f"{a}__{b}") == [a, b]


def test_unit_pattern_rejects_bad_units() -> None:
    for bad in ["a__b__c", "a___b", "A", "a b", "", "a__", "__a", "-a"]:
        assert not re.fullmatch(UNIT_PATTERN, bad), bad
        with pytest.raises(SkillmixInputError):
            unit_slugs(bad)
    with pytest.raises(SkillmixInputError, match="two different"):
        unit_slugs("a__a")


def test_graph_units_errors() -> None:
    with pytest.raises(SkillmixInputError, match=r"graph\.method.*brute_force, linear, gradient, given"):
        graph_units("pairwise", ["a"])
    with pytest.raises(SkillmixInputError, match="more than once"):
        graph_units("linear", ["a", "a"])
    with pytest.raises(SkillmixInputError, match="slug"):
        graph_units("linear", ["Not A Slug"])
    assert METHODS == ("brute_force", "linear", "gradient", "given")
    assert graph_units("gradient", ["a", "b"]) == []  # no training runs


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
# given graphs

GIVEN = np.array([[0.0, 1.0, -0.25], [0.5, 0.0, 2.0], [-1.5, 0.125, 0.0]])  # rows/columns SKILLS


@pytest.fixture
def given_files(tmp_path: Path) -> dict[str, Path]:
    np.save(tmp_path / "g.npy", GIVEN)
    (tmp_path / "g.txt").write_text("\n".join(SKILLS) + "\n\n", encoding="utf-8")
    (tmp_path / "g.json").write_text(json.dumps(SKILLS), encoding="utf-8")
    # non-square 3 x 2: columns are the targets "ü" and "skill A"
    np.save(tmp_path / "ns.npy", GIVEN[:, [2, 0]])
    (tmp_path / "ns.json").write_text(json.dumps({"rows": SKILLS, "columns": [C_, A_]}), encoding="utf-8")
    return {p.stem + p.suffix: p for p in tmp_path.iterdir()}


@pytest.mark.parametrize("names", ["g.txt", "g.json"])
def test_load_given_reorders_to_data_order(given_files: dict[str, Path], names: str) -> None:
    data = [C_, A_, B_]
    A, rows, columns = load_given(given_files["g.npy"], given_files[names], data)
    assert rows == columns == data
    order = [2, 0, 1]
    for i, r in enumerate(order):
        for j, col in enumerate(order):
            assert A[i, j] == GIVEN[r, col]  # exact: values are never altered
    assert A.dtype == np.float64


def test_load_given_explicit_rows(given_files: dict[str, Path]) -> None:
    A, rows, columns = load_given(given_files["g.npy"], None, SKILLS, rows=SKILLS)
    assert rows == columns == SKILLS
    np.testing.assert_array_equal(A, GIVEN)
    A, rows, columns = load_given(given_files["ns.npy"], None, [B_, A_, C_], rows=SKILLS, columns=[C_, A_])
    assert rows == [B_, A_, C_] and columns == [A_, C_]
    np.testing.assert_array_equal(A, GIVEN[np.ix_([1, 0, 2], [0, 2])])


def test_load_given_non_square(given_files: dict[str, Path]) -> None:
    data = [B_, C_, A_]
    A, rows, columns = load_given(given_files["ns.npy"], given_files["ns.json"], data)
    assert rows == data
    assert columns == [C_, A_]  # graph columns that are data skills, in data order
    np.testing.assert_array_equal(A, GIVEN[np.ix_([1, 2, 0], [2, 0])])


def test_load_given_superset_is_restricted(tmp_path: Path) -> None:
    big = np.arange(16, dtype=float).reshape(4, 4) / 8 - 1
    names = ["zeta", *SKILLS]
    np.save(tmp_path / "big.npy", big)
    (tmp_path / "big.txt").write_text("\n".join(names), encoding="utf-8")
    A, rows, columns = load_given(tmp_path / "big.npy", tmp_path / "big.txt", [B_, A_])
    assert rows == columns == [B_, A_]
    np.testing.assert_array_equal(A, big[np.ix_([2, 1], [2, 1])])


def test_load_given_keeps_float32_values_and_ones(tmp_path: Path) -> None:
    m = np.array([[1.0, 1.0], [0.1, 1.0]], dtype=np.float32)  # off-diagonal 1 is NOT turned into 0.5
    np.save(tmp_path / "m.npy", m)
    A, _, _ = load_given(tmp_path / "m.npy", None, ["x", "y"], rows=["x", "y"])
    assert A.dtype == np.float64
    np.testing.assert_array_equal(A, m.astype(np.float64))
    assert A[0, 1] == 1.0


def test_load_given_errors(given_files: dict[str, Path], tmp_path: Path) -> None:
    npy, txt = given_files["g.npy"], given_files["g.txt"]
    with pytest.raises(SkillmixInputError, match=r"data skill\(s\) 'new'.*graph skills not in the data: 'ü'"):
        load_given(npy, txt, [A_, B_, "new"])
    with pytest.raises(SkillmixInputError, match="not found"):
        load_given(tmp_path / "absent.npy", txt, SKILLS)
    with pytest.raises(SkillmixInputError, match="not found"):
        load_given(npy, tmp_path / "absent.txt", SKILLS)
    (tmp_path / "two.txt").write_text(f"{A_}\n{B_}\n", encoding="utf-8")
    with pytest.raises(SkillmixInputError, match=r"shape \(3, 3\) does not match"):
        load_given(npy, tmp_path / "two.txt", [A_, B_])
    with pytest.raises(SkillmixInputError, match="does not match"):
        load_given(given_files["ns.npy"], txt, SKILLS)  # 3 x 2 with one 3-name list
    bad = GIVEN.copy()
    bad[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(SkillmixInputError, match=r"non-finite.*row 1, column 2"):
        load_given(tmp_path / "nan.npy", txt, SKILLS)
    np.save(tmp_path / "flat.npy", np.zeros(3))
    with pytest.raises(SkillmixInputError, match="2-D"):
        load_given(tmp_path / "flat.npy", txt, SKILLS)
    (tmp_path / "junk.npy").write_text("not numpy")
    with pytest.raises(SkillmixInputError, match="junk.npy"):
        load_given(tmp_path / "junk.npy", txt, SKILLS)
    (tmp_path / "dup.txt").write_text(f"{A_}\n{A_}\n{C_}\n", encoding="utf-8")
    with pytest.raises(SkillmixInputError, match="more than once"):
        load_given(npy, tmp_path / "dup.txt", [A_, C_])
    (tmp_path / "bad.json").write_text(json.dumps({"names": SKILLS}), encoding="utf-8")
    with pytest.raises(SkillmixInputError, match="bad.json"):
        load_given(npy, tmp_path / "bad.json", SKILLS)
    (tmp_path / "g.csv").write_text(",".join(SKILLS))
    with pytest.raises(SkillmixInputError, match=r"\.txt or \.json"):
        load_given(npy, tmp_path / "g.csv", SKILLS)
    with pytest.raises(SkillmixInputError, match="skill order is needed"):
        load_given(npy, None, SKILLS)
    with pytest.raises(SkillmixInputError, match="not both"):
        load_given(npy, txt, SKILLS, rows=SKILLS)
    (tmp_path / "cols.json").write_text(json.dumps({"rows": SKILLS, "columns": ["x", "y", "z"]}))
    with pytest.raises(SkillmixInputError, match="at least one data skill among its rows"):
        load_given(npy, tmp_path / "cols.json", SKILLS)


def test_load_given_out_of_domain_graph(tmp_path) -> None:
    """Training skills as rows, evaluation skills as columns only (like Skill-It's 59 × 12 NI graph)."""
    matrix = np.array([[0.5, -0.25], [0.0, 1.5]])
    npy = tmp_path / "ood.npy"
    np.save(npy, matrix)
    (tmp_path / "ood.json").write_text(json.dumps({"rows": ["t1", "t2"], "columns": ["e1", "e2"]}))
    A, rows, columns = load_given(npy, tmp_path / "ood.json", ["e2", "t2", "e1", "t1"])
    assert rows == ["t2", "t1"] and columns == ["e2", "e1"]
    np.testing.assert_array_equal(A, [[1.5, 0.0], [-0.25, 0.5]])
    with pytest.raises(SkillmixInputError, match="rows or columns"):
        load_given(npy, tmp_path / "ood.json", ["t1", "e1", "zz"])


def test_load_given_published_ni_graph() -> None:
    npy = NI_METADATA / "top_23_early_decreases.npy"
    txt = NI_METADATA / "top_23.txt"
    if not (npy.is_file() and txt.is_file()):
        pytest.skip(f"published Skill-It NI graph not found at {NI_METADATA} (set SKILLMIX_SHARED_DATA)")
    original = np.load(npy)
    names = [line.strip() for line in txt.read_text().splitlines() if line.strip()]
    assert original.shape == (23, 23) and len(names) == 23
    perm = np.random.default_rng(0).permutation(23)
    data = [names[i] for i in perm]
    A, rows, columns = load_given(npy, txt, data)
    assert rows == columns == data
    np.testing.assert_array_equal(A, original[np.ix_(perm, perm)])
    assert A.min() == original.min() == pytest.approx(-1.772)
    assert A.max() == original.max() == pytest.approx(0.915)
    np.testing.assert_array_equal(np.diag(A), np.zeros(23))  # diagonal stays 0, not set to 1


# ------------------------------------------------------------------------------------------
# files and figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_write_read_graph_round_trip(tmp_path: Path) -> None:
    options = GraphOptions(measure="window", binary_edge_weight=0.5, diagonal=1)
    A, raw = assemble("brute_force", SKILLS, SLUGS, curves_for("brute_force"), options)
    out = tmp_path / "graph"
    write_graph(out, A, SKILLS, SKILLS, raw, "brute_force", options.to_dict(), extra={"steps": 12})
    assert sorted(p.name for p in out.iterdir()) == [
        "adjacency.npy", "graph.json", "heatmap.png", "raw.parquet", "skills.json"
    ]  # fmt: skip
    B, rows, columns = read_graph(out)
    np.testing.assert_array_equal(B, A)
    assert B.dtype == np.float64 and rows == columns == SKILLS
    np.testing.assert_array_equal(np.load(out / "adjacency.npy"), A)
    assert json.loads((out / "skills.json").read_text()) == {"rows": SKILLS, "columns": SKILLS}
    meta = json.loads((out / "graph.json").read_text())
    assert meta == {
        "method": "brute_force",
        "options": options.to_dict(),
        "shape": [3, 3],
        "extra": {"steps": 12},
    }
    pd.testing.assert_frame_equal(pd.read_parquet(out / "raw.parquet"), raw)
    assert (out / "heatmap.png").read_bytes()[:8] == PNG_SIGNATURE


def test_write_read_given_non_square(tmp_path: Path) -> None:
    A = GIVEN[:, :2]
    write_graph(tmp_path, A, SKILLS, SKILLS[:2], None, "given", None)
    B, rows, columns = read_graph(tmp_path)
    np.testing.assert_array_equal(B, A)
    assert rows == SKILLS and columns == SKILLS[:2]
    meta = json.loads((tmp_path / "graph.json").read_text())
    assert meta["options"] is None and meta["shape"] == [3, 2] and meta["method"] == "given"
    assert list(pd.read_parquet(tmp_path / "raw.parquet").columns) == ["unit", "step", "skill", "loss"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_write_and_read_graph_errors(tmp_path: Path) -> None:
    with pytest.raises(SkillmixInputError, match="does not match"):
        write_graph(tmp_path / "x", GIVEN, SKILLS[:2], SKILLS, None, "given", None)
    with pytest.raises(SkillmixInputError, match="adjacency.npy not found"):
        read_graph(tmp_path / "missing")


def test_plot_heatmap_large_and_constant(tmp_path: Path) -> None:
    big = np.random.default_rng(0).normal(size=(25, 25))  # no annotations above 20
    names = [f"s{i}" for i in range(25)]
    plot_heatmap(big, names, names, tmp_path / "big.png", "big")
    plot_heatmap(np.zeros((2, 1)), ["x", "y"], ["x"], tmp_path / "zero.png", "zeros")
    for name in ("big.png", "zero.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE


def test_graph_agreement_ranks_off_diagonal_entries() -> None:
    from skillmix.graph.agreement import graph_agreement

    a = np.array([[9.0, 1.0, 2.0], [3.0, 9.0, 4.0], [5.0, 6.0, 9.0]])
    assert graph_agreement(a, a * 10 - 1) == pytest.approx(1.0)  # monotone: same ranks
    b = a.copy()
    np.fill_diagonal(b, -100.0)  # the diagonal does not count
    assert graph_agreement(a, b) == pytest.approx(1.0)
    assert graph_agreement(a, -a) == pytest.approx(-1.0)
    with pytest.raises(SkillmixInputError, match="k × k"):
        graph_agreement(a, a[:2])


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


def test_edge_agreement() -> None:
    from skillmix.graph.agreement import edge_agreement

    known = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert edge_agreement(known * 0.5, known) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    learned = np.array([[1, 0.4, 0.3], [0, 1, 0], [0.01, 0, 1]])
    result = edge_agreement(learned, known, threshold=0.05)
    assert result["precision"] == pytest.approx(0.5)  # x->y right, x->z wrong (0.01 is below)
    assert result["recall"] == pytest.approx(0.5)  # y->z missed
    assert result["f1"] == pytest.approx(0.5)
    assert edge_agreement(np.eye(3), known)["precision"] == 1.0  # nothing predicted
    assert edge_agreement(np.eye(3), known)["recall"] == 0.0


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
