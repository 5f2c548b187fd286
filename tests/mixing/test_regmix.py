"""RegMix (docs/methods/mixers.md#regmix): proxy mixtures, regression, search, the fit's refusals, the
strategy, the stage's jobs end to end on a tiny model, and (slow) the reproduction on RegMix's
published proxy runs."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skillmix.engine.sampling import MixingInputs
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.mixing.regmix import RegMixSampler, proxy_evaluations, regmix_cost
from skillmix.mixing.regmix_fit import fit_proxy_runs, regmix_fit_job
from skillmix.mixing.regmix_regression import (
    LinearModel,
    fit_regressor,
    holdout_split,
    lightgbm_params,
    out_of_fold,
    pearson,
    spearman,
)
from skillmix.mixing.regmix_runs import ProxyRuns, read_proxy_table
from skillmix.mixing.regmix_sampling import (
    drop_near_duplicates,
    postprocess,
    sample_mixtures,
    strengths,
    tempered,
    usage_cap,
)
from skillmix.mixing.regmix_search import search_mixture, top_k_mean
from skillmix.mixing.strategies import build_sampler, strategy_settings
from skillmix.mixing.strategies import read_mixture_file as read_mixture
from skillmix.preflight import _check_regmix

HAS_LIGHTGBM = importlib.util.find_spec("lightgbm") is not None
needs_lightgbm = pytest.mark.skipif(
    not HAS_LIGHTGBM, reason="lightgbm is not installed (pip install lightgbm)"
)
SAMPLE = complete("regmix", None)["sample"]
SIZES = [100, 300, 600, 2000, 7000]


# --- proxy mixtures (§6.2) -------------------------------------------------------------------------


def test_sampled_mixtures_are_capped_rounded_distinct_and_seeded() -> None:
    x = sample_mixtures(SIZES, 64, SAMPLE, seed=3)
    k, minimum = len(SIZES), SAMPLE["minimum"]
    q = np.asarray(SIZES) / sum(SIZES)
    assert x.shape == (64, k)
    np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(x >= 0) and np.all(x <= usage_cap(q, SAMPLE["max_usage"]) + 1e-12)
    # rounded to multiples of `minimum`, then renormalised (by at most a factor 1 ± k·minimum/2)
    assert x[x > 0].min() >= minimum / (1 + k * minimum / 2) - 1e-15
    assert len({tuple(r) for r in x}) == 64
    np.testing.assert_array_equal(x, sample_mixtures(SIZES, 64, SAMPLE, seed=3))
    assert not np.array_equal(x, sample_mixtures(SIZES, 64, SAMPLE, seed=4))


def test_strengths_are_the_log_spaced_values() -> None:
    s = strengths(0.1, 5.0, 15)
    assert len(s) == 15 and s[0] == pytest.approx(0.1) and s[-1] == pytest.approx(5.0)
    np.testing.assert_allclose(s[1:] / s[:-1], (5.0 / 0.1) ** (1 / 14))
    np.testing.assert_allclose(s, np.logspace(np.log10(0.1), np.log10(5.0), 15))
    with pytest.raises(SkillmixInputError, match="min_strength"):
        strengths(5.0, 0.1, 15)


def test_temperature_and_the_cap_on_the_untempered_prior() -> None:
    np.testing.assert_allclose(tempered(np.array([0.2, 0.8]), 0.5), [1 / 3, 2 / 3])
    np.testing.assert_allclose(tempered(np.array([0.2, 0.8]), 1.0), [0.2, 0.8])
    q = np.array([0.01, 0.99])
    np.testing.assert_allclose(usage_cap(q, 2), [0.02, 1.0])
    # tempering lifts skill 0 to 1/11 of the prior; its cap stays 2 × its untempered share 0.01
    x = sample_mixtures([1, 99], 5, {**SAMPLE, "max_usage": 2}, seed=0)
    assert np.all(x[:, 0] <= 0.02 + 1e-12)


def test_postprocess_by_hand() -> None:
    out = postprocess(np.array([[0.0001, 0.29985, 0.69995]]), 0.001)
    # 1e-4 < minimum → 0; renormalised to [0, 0.29988, 0.70002]; rounded to [0, 0.3, 0.7]
    np.testing.assert_allclose(out, [[0.0, 0.3, 0.7]])
    assert postprocess(np.array([[0.2, 0.8]]), 0.0).tolist() == [[0.2, 0.8]]


def test_near_duplicates_are_dropped_after_a_lexicographic_sort() -> None:
    x = np.array([[0.5, 0.5], [0.2, 0.8], [0.5 + 4e-6, 0.5 - 4e-6], [0.2, 0.8]])
    np.testing.assert_array_equal(drop_near_duplicates(x), [[0.2, 0.8], [0.5, 0.5]])


def test_too_few_mixtures_within_the_cap_is_an_error_naming_cap_and_multiplier() -> None:
    with pytest.raises(SkillmixInputError, match=r"max_usage = 0\.5.*multiplier = 100"):
        sample_mixtures(SIZES, 8, {**SAMPLE, "max_usage": 0.5}, seed=0)


# --- regression (§6.3) -----------------------------------------------------------------------------


def simplex_points(n: int, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=n)


def test_linear_fit_recovers_a_linear_function_of_the_weights_exactly() -> None:
    w, c = np.array([1.0, -2.0, 0.5, 3.0]), 0.7
    x = simplex_points(12, 4, 0)
    model = LinearModel.fit(x, c + x @ w)  # collinear design: the weights sum to 1
    new = simplex_points(50, 4, 1)
    np.testing.assert_allclose(model.predict(new), c + new @ w, atol=1e-10)
    np.testing.assert_allclose(
        out_of_fold(x, (c + x @ w)[:, None], "linear", {}, seed=0)[:, 0], c + x @ w, atol=1e-9
    )


def test_spearman_and_pearson() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    assert spearman(a, a**3) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert spearman(a, np.ones(5)) is None
    scipy_stats = pytest.importorskip("scipy.stats")
    b = np.array([3.0, 1.0, 2.0, 2.0, 5.0])
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b)[0])


@needs_lightgbm
def test_lightgbm_settings_and_early_stopping_on_a_held_out_share() -> None:
    cfg = complete("regmix", None)["lightgbm"]
    params = lightgbm_params(cfg)
    assert params["num_threads"] == 1 and params["metric"] == ["l1", "l2"] and params["learning_rate"] == 0.01
    x = simplex_points(60, 3, 0)
    y = (x**2).sum(axis=1)
    assert fit_regressor(x, y, "lightgbm", cfg).best_iteration is None  # no early stopping by default
    stopped = fit_regressor(x, y, "lightgbm", {**cfg, "early_stopping_rounds": 3})
    assert stopped.best_iteration is not None and 1 <= stopped.best_iteration <= cfg["num_iterations"]
    fit_rows, held = holdout_split(60, 0.2, 42)
    assert len(held) == 12 and not set(fit_rows) & set(held) and len(fit_rows) + len(held) == 60


# --- search ----------------------------------------------------------------------------------------


def test_top_k_averaging_is_exact() -> None:
    candidates = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]])
    mixture, chosen = top_k_mean(candidates, np.array([3.0, 1.0, 2.0, 1.0]), 2)
    assert chosen.tolist() == [1, 3]  # ties keep the candidates' order
    np.testing.assert_allclose(mixture, [0.1, 0.9])


def test_search_finds_the_minimum_of_a_known_objective_as_candidates_grow() -> None:
    target = np.array([0.1, 0.2, 0.3, 0.4])
    q = np.full(4, 0.25)

    def distance(c: int) -> float:
        found = search_mixture(
            lambda x: ((x - target) ** 2).sum(axis=1), q, candidates=c, top_k=8, concentration=4.0, seed=0
        )
        return float(np.abs(found.mixture - target).sum())

    far, near = distance(50), distance(50_000)
    assert near < far and near < 0.05


def test_search_cap_holds_unlearned_skills_and_refuses_when_all_rejected() -> None:
    q = np.array([0.5, 0.3, 0.2])
    found = search_mixture(
        lambda x: x[:, 0], q, candidates=500, top_k=10, concentration=1.0, seed=0,
        cap=np.array([1.0, 1.0, 1.0]), active=np.array([True, True, False]),
    )  # fmt: skip
    assert found.mixture[2] == 0 and found.mixture.sum() == pytest.approx(1.0)
    with pytest.raises(SkillmixInputError, match="max_usage = 0.1"):
        search_mixture(
            lambda x: x[:, 0], q, candidates=100, top_k=4, concentration=1.0, seed=0,
            cap=usage_cap(q, 0.1), max_usage=0.1,
        )  # fmt: skip


# --- the fit's refusals (§6.5) ---------------------------------------------------------------------


def linear_runs(n: int, k: int = 3, seed: int = 0) -> ProxyRuns:
    """Noise-free proxy runs: loss of skill j = 2 − x_j (training on a skill lowers its loss)."""
    x = simplex_points(n, k, seed)
    names = [f"s{i}" for i in range(k)]
    return ProxyRuns([str(i) for i in range(n)], names, names, x, 2 - x, "test runs")


def fit_cfg(**over) -> dict:
    return complete("regmix", {"regressor": "linear", "search": {"candidates": 2000, "top_k": 16}, **over})


def test_fit_refuses_too_few_runs_and_linear_without_more_runs_than_skills() -> None:
    q = np.full(3, 1 / 3)
    with pytest.raises(SkillmixInputError, match="at least 5 proxy runs"):
        fit_proxy_runs(linear_runs(4), q, fit_cfg(), 0)
    with pytest.raises(SkillmixInputError, match="linear: 6 proxy runs for 6 training skills"):
        fit_proxy_runs(linear_runs(6, k=6), np.full(6, 1 / 6), fit_cfg(), 0)


def test_lightgbm_on_too_few_runs_to_split_a_tree_is_refused_at_the_fit_and_before_any_job() -> None:
    """LightGBM keeps 20 runs a leaf: on fewer than 40 runs its tree is one leaf, a constant."""
    with pytest.raises(SkillmixInputError, match="lightgbm: 39 proxy runs from test runs.*regressor: linear"):
        fit_proxy_runs(linear_runs(39), np.full(3, 1 / 3), fit_cfg(regressor="lightgbm"), 0)
    config = {"regmix": fit_cfg(regressor="lightgbm", runs=16)}
    with pytest.raises(SkillmixInputError, match="config regmix.runs: 16 proxy runs with regmix.regressor"):
        _check_regmix(config, ["stratified", "regmix"])
    _check_regmix(config, ["stratified"])  # RegMix not trained: nothing to fit
    _check_regmix({"regmix": fit_cfg(regressor="lightgbm", runs=40)}, ["regmix"])
    _check_regmix({"regmix": fit_cfg(regressor="lightgbm", runs=16, proxy_runs="t.csv")}, ["regmix"])


def test_fit_refuses_a_non_finite_loss_by_run_name() -> None:
    runs = linear_runs(8)
    runs.losses[5, 1] = np.nan
    with pytest.raises(SkillmixInputError, match=r"run 5 \(\['s1'\]\)"):
        fit_proxy_runs(runs, np.full(3, 1 / 3), fit_cfg(), 0)


def test_fit_searches_the_objective_and_holds_unlearned_skills(caplog) -> None:
    runs = linear_runs(12, k=4)
    runs.weights[:, 3] = 0  # skill s3: never trained on by a proxy run
    runs.weights /= runs.weights.sum(axis=1, keepdims=True)
    runs.losses = 2 - runs.weights
    with caplog.at_level(logging.WARNING):
        result = fit_proxy_runs(runs, np.full(4, 0.25), fit_cfg(objective="s1"), 0)
    assert "s3" in caplog.text and result.mixture[3] == 0
    assert result.mixture.argmax() == 1  # the loss of s1 falls with its weight
    assert result.diagnostics["out_of_fold"]["objective"]["spearman"] == pytest.approx(1.0)
    assert result.diagnostics["unlearned_skills"] == ["s3"]
    with pytest.raises(SkillmixInputError, match="regmix.objective: 'nope'"):
        fit_proxy_runs(runs, np.full(4, 0.25), fit_cfg(objective="nope"), 0)


# --- proxy-run tables, mixture files, the strategy ------------------------------------------------


def test_proxy_table_columns(tmp_path) -> None:
    frame = pd.DataFrame(
        {"run": ["a", "b"], "weight:x": [0.5, 1.0], "weight:y": [0.5, 0.0], "loss:x": [1.0, 2.0]}
    )
    frame.to_csv(tmp_path / "runs.csv", index=False)
    frame.to_parquet(tmp_path / "runs.parquet")
    for name in ("runs.csv", "runs.parquet"):
        runs = read_proxy_table(tmp_path / name, ["x", "y"], ["x"])
        assert runs.names == ["a", "b"] and runs.weights.tolist() == [[0.5, 0.5], [1.0, 0.0]]
    with pytest.raises(SkillmixInputError, match=r"runs\.csv lacks columns \['weight:z', 'loss:y'\]"):
        read_proxy_table(tmp_path / "runs.csv", ["x", "z"], ["x", "y"])


def test_read_mixture_names_the_file_and_missing_skills(tmp_path) -> None:
    path = tmp_path / "mixture.json"
    path.write_text(json.dumps({"weights": {"a": 0.25, "b": 0.75}}))
    assert read_mixture(path, ["b", "a"]) == {"b": 0.75, "a": 0.25}
    with pytest.raises(SkillmixInputError, match=r"mixture\.json: no weight for skills \['c'\]"):
        read_mixture(path, ["a", "c"])


def test_the_strategy_trains_on_the_file_mixture_and_lists_the_proxy_runs() -> None:
    inputs = MixingInputs(["a", "b"], [10, 30], 0, 5, ["a", "b"], mixture={"a": 0.25, "b": 0.75})
    settings = strategy_settings("regmix", {"runs": 8, "proxy": {"steps": 20}})
    sampler = build_sampler("regmix", inputs, settings)
    assert isinstance(sampler, RegMixSampler) and sampler.mixture().tolist() == [0.25, 0.75]
    assert sampler.cost()["extra_runs"] == 8 and sampler.cost()["extra_steps"] == 160
    assert regmix_cost(settings, 2, 4, 10) == {
        "extra_runs": 8, "extra_steps": 160, "extra_examples": 640, "extra_evaluations": 8 * 3,
    }  # fmt: skip
    assert proxy_evaluations(25, 10) == 4  # 0, 10, 20, 25
    assert regmix_cost({**settings, "proxy_runs": "t.csv"}, 2, 4, 10)["extra_runs"] == 0
    with pytest.raises(SkillmixInputError, match="results/regmix/mixture.json"):
        build_sampler("regmix", MixingInputs(["a", "b"], [10, 30], 0, 5, ["a", "b"]), settings)


def test_one_skill_gives_the_mixture_one_without_runs(tmp_path) -> None:
    out = {"mixture": str(tmp_path / "m.json"), "fit": str(tmp_path / "f.parquet")}
    record = regmix_fit_job(None, [], regmix_cfg={}, train_cfg={}, skills={"only": 5}, outputs=out)
    assert record["weights"] == {"only": 1.0} and record["runs"] == 0
    assert read_mixture(out["mixture"], ["only"]) == {"only": 1.0}


# --- the stage end to end on a tiny model ---------------------------------------------------------


TINY = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2, "max_positions": 96}
MODEL = {"kind": "tiny", "seed": 0, "tiny": TINY, "max_length": 96, "device": "cpu", "precision": "fp32"}


def test_mixtures_proxy_runs_and_fit_end_to_end(tmp_path) -> None:
    from skillmix.data.slicing import make_slices
    from skillmix.infra.stamps import read_stamp
    from skillmix.mixing.regmix_fit import regmix_mixtures_job
    from skillmix.mixing.regmix_proxy import regmix_proxy_job

    manifest = make_slices(
        {"kind": "lego", "seed": 0, "lego": {"n_vars": 3, "examples_per_skill": 40}},
        {"seed": 0, "val": 8, "test": 8},
        tmp_path / "slices",
    )
    slugs = [s["slug"] for s in manifest["skills"]]
    regmix = {
        "runs": 5,
        "proxy": {"steps": 3},
        "regressor": "linear",
        "search": {"candidates": 500, "top_k": 8},
    }
    train = {"batch_size": 4, "warmup_steps": 1, "eval_every": 2, "lr": 1e-3}
    mpath = str(tmp_path / "mixtures.parquet")
    mixtures = regmix_mixtures_job(
        str(tmp_path / "slices/manifest.json"),
        regmix_cfg=regmix,
        train_cfg=train,
        outputs={"mixtures": mpath},
    )
    assert sorted(mixtures["run"].unique()) == list(range(5))
    curves = []
    for n in range(5):
        curves.append(str(tmp_path / f"runs/{n}.parquet"))
        curve = regmix_proxy_job(
            str(tmp_path / "slices/manifest.json"),
            [str(tmp_path / f"slices/train/{s}.parquet") for s in slugs],
            [str(tmp_path / f"slices/val/{s}.parquet") for s in slugs],
            mpath,
            n,
            model_cfg=MODEL, train_cfg=train, eval_cfg={"batch_size": 16}, regmix_cfg=regmix,
            outputs={"curve": curves[-1]}, stamp={"regmix.proxy": regmix["proxy"]},
        )  # fmt: skip
        assert sorted(curve["step"].unique()) == [0, 2, 3] and np.isfinite(curve["loss"]).all()
    assert read_stamp(curves[0]) == {"regmix.proxy": {"steps": 3}}
    out = {"mixture": str(tmp_path / "mixture.json"), "fit": str(tmp_path / "fit.parquet")}
    sizes = {s["name"]: s["counts"]["train"] for s in manifest["skills"]}
    record = regmix_fit_job(mpath, curves, regmix_cfg=regmix, train_cfg=train, skills=sizes, outputs=out)
    weights = read_mixture(out["mixture"], list(sizes))
    assert sum(weights.values()) == pytest.approx(1.0) and record["runs"] == 5
    assert record["stamp"] == {"regmix.proxy": {"steps": 3}} and np.isfinite(record["predicted_objective"])
    fit = pd.read_parquet(out["fit"])
    assert list(fit.columns) == ["run", "observed", "predicted"] and len(fit) == 5


# --- reproduction on RegMix's published proxy runs (§6.7) ------------------------------------------


SHARED = Path(os.environ.get("SKILLMIX_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


@pytest.mark.slow
def test_reproduction_on_the_published_proxy_runs(tmp_path) -> None:
    if not HAS_LIGHTGBM:
        pytest.skip("lightgbm is not installed (pip install lightgbm)")
    folder = SHARED / "regmix_proxy_runs"
    if not (folder / "train_mixture_1m.csv").is_file():
        pytest.skip(f"RegMix proxy runs not found at {folder} (set SKILLMIX_SHARED_DATA)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import regmix_reproduction as bench

    r = bench.run(folder, tmp_path)
    assert r["notebook"]["rho"] == bench.NOTEBOOK_RHO
    for domain, weight in bench.NOTEBOOK_OPTIMUM.items():
        assert abs(r["notebook"]["optimum"][domain] - weight) < 1e-6
    rho = {reg: {s: v["spearman"] for s, v in scales.items()} for reg, scales in r["skillmix"].items()}
    for reg, thresholds in bench.THRESHOLDS.items():
        for scale, least in thresholds.items():
            assert rho[reg][scale] >= least, (reg, scale, rho[reg][scale])
    assert all(rho["lightgbm"][s] > rho["linear"][s] for s in ("1M", "60M", "1B"))
