"""DoReMi (docs/methods/mixers.md#doremi): the proxy's weight update against the spec's worked example
and its properties, the `doremi` strategy's mixture file, and a short proxy job through the engine."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from skillmix.data.slicing import make_slices
from skillmix.engine.encoding import collate, label_token_losses
from skillmix.engine.modeling import load_model, save_model
from skillmix.engine.sampling import BatchStats, MixingInputs
from skillmix.engine.training import TrainSettings
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.stamps import read_stamp
from skillmix.mixing.doremi import DoReMiProxySampler, DoReMiSampler, doremi_cost
from skillmix.mixing.doremi_proxy import doremi_proxy_job, load_reference, proxy_run, weights_record
from skillmix.mixing.strategies import build_sampler, read_mixture_file, strategy_settings

V = 259  # the byte tokenizer's vocabulary


def proxy(k: int = 2, sizes=None, **kw) -> DoReMiProxySampler:
    skills = [f"s{i}" for i in range(k)]
    return DoReMiProxySampler(skills, sizes or [50] * k, 0, V, **kw)


def token_stats(step: int, skills_tokens: list[list[tuple[float, float]]]) -> BatchStats:
    """BatchStats of a batch from per-token (ℓ, ℓ_ref) pairs per skill, the per-token excess clipped
    before summing (what the engine sends)."""
    k = len(skills_tokens)
    loss, ref, excess, tokens = (np.zeros(k) for _ in range(4))
    for j, pairs in enumerate(skills_tokens):
        for ell, ell_ref in pairs:
            loss[j] += ell
            ref[j] += ell_ref
            excess[j] += max(ell - ell_ref, 0.0)
            tokens[j] += 1
    return BatchStats(
        step=step,
        loss_sum=loss,
        tokens=tokens.astype(np.int64),
        examples=(tokens > 0).astype(np.int64),
        reference_loss_sum=ref,
        excess_loss_sum=excess,
    )


def excess_stats(step: int, excess: list[float], tokens: list[int]) -> BatchStats:
    """BatchStats with the given summed clipped excess and token counts per skill."""
    t = np.asarray(tokens, dtype=np.int64)
    return BatchStats(
        step, np.ones(len(t)) * 3.0 * t, t, (t > 0).astype(np.int64), np.ones(len(t)), np.asarray(excess)
    )


# --- the update rule ----------------------------------------------------------------------------


def test_worked_example() -> None:
    s = proxy(eta=1.0, smoothing=1e-3)
    np.testing.assert_allclose(s.alpha(), [0.5, 0.5])
    s.observe_batch(token_stats(1, [[(2.4, 2.0), (1.8, 2.0)], [(2.1, 2.0)]]))
    np.testing.assert_allclose(s.scores, [0.2, 0.1], rtol=1e-12)
    soft = np.exp(np.log(0.5) + np.array([0.2, 0.1]))
    soft /= soft.sum()
    np.testing.assert_allclose(soft, [0.524979, 0.475021], atol=5e-7)
    np.testing.assert_allclose(s.alpha(), 0.999 * soft + 0.0005, rtol=1e-12)
    np.testing.assert_allclose(s.alpha(), [0.524954, 0.475046], atol=5e-7)
    np.testing.assert_allclose(s.loss_weights(1), s.alpha())
    np.testing.assert_allclose(s.average_weights(), s.alpha(), rtol=1e-12)  # paper: ᾱ = α_1
    code = proxy(eta=1.0, smoothing=1e-3, average="with_initial")
    code.observe_batch(token_stats(1, [[(2.4, 2.0), (1.8, 2.0)], [(2.1, 2.0)]]))
    np.testing.assert_allclose(code.average_weights(), [0.512477, 0.487523], atol=5e-7)
    assert s.trajectory_rows() == [
        {"step": 1, "skill": "s0", "weight": s.alpha()[0], "score": pytest.approx(0.2)},
        {"step": 1, "skill": "s1", "weight": s.alpha()[1], "score": pytest.approx(0.1)},
    ]


def test_clip_before_average_and_token_mean() -> None:
    s = proxy()
    # excesses (+0.4, -0.2): clipped per token then averaged = 0.2, not max(mean, 0) = 0.1
    s.observe_batch(token_stats(1, [[(2.4, 2.0), (1.8, 2.0)], [(2.0, 2.0)]]))
    assert s.scores[0] == pytest.approx(0.2) and s.scores[1] == 0.0
    # 3 tokens in one example (excess 0.3 each) and 1 in another (excess 0.7): (0.9 + 0.7) / 4 tokens,
    # not the mean of the example means (0.3 + 0.7) / 2
    t = proxy()
    t.observe_batch(excess_stats(1, [0.9 + 0.7, 0.0], [4, 1]))
    assert t.scores[0] == pytest.approx(0.4) and t.scores[0] != pytest.approx(0.5)


def test_zero_scores_keep_uniform_and_constant_scores_collapse_to_the_floor() -> None:
    s = proxy(3, eta=1.0, smoothing=1e-3)
    for step in range(1, 51):
        s.observe_batch(excess_stats(step, [0.0, 0.0, 0.0], [2, 3, 1]))
        np.testing.assert_allclose(s.alpha(), [1 / 3] * 3, rtol=1e-12)
    c, k = 1e-3, 3
    s = proxy(3, eta=1.0, smoothing=c)
    for step in range(1, 201):
        s.observe_batch(excess_stats(step, [1.0, 0.5, 0.0], [1, 1, 1]))
        assert s.alpha().min() >= c / k * (1 - 1e-12)
    # a fixed point: α* = (1 - c) softmax(log α* + η λ) + c u; each loser sits above the floor c/k by
    # the geometric series of its gap, (c/k) / (1 - e^{-η Δ}) to first order in c
    before = s.alpha()
    s.observe_batch(excess_stats(201, [1.0, 0.5, 0.0], [1, 1, 1]))
    np.testing.assert_allclose(s.alpha(), before, rtol=1e-12)
    np.testing.assert_allclose(s.alpha()[1:], c / k / (1 - np.exp([-0.5, -1.0])), rtol=2e-3)
    assert int(np.argmax(s.average_weights())) == 0
    wide = proxy(3, eta=1.0, smoothing=c)  # large gaps: the c-floored one-hot on argmax λ
    for step in range(1, 30):
        wide.observe_batch(excess_stats(step, [30.0, 15.0, 0.0], [1, 1, 1]))
    np.testing.assert_allclose(wide.alpha(), [1 - c + c / k, c / k, c / k], rtol=1e-6)


def test_absent_skill_keeps_its_score_and_starts_at_ln_v() -> None:
    s = proxy(3)
    np.testing.assert_allclose(s.scores, [math.log(V)] * 3)
    s.observe_batch(excess_stats(1, [0.3, 0.0, 0.0], [1, 0, 2]))
    np.testing.assert_allclose(s.scores, [0.3, math.log(V), 0.0])  # a present zero excess scores 0
    s.observe_batch(excess_stats(2, [0.0, 0.4, 0.0], [0, 2, 1]))
    np.testing.assert_allclose(s.scores, [0.3, 0.2, 0.0])
    assert [r["score"] for r in s.trajectory_rows()[:3]] == pytest.approx([0.3, math.log(V), 0.0])


def test_average_is_the_mean_of_the_updates() -> None:
    for average, first in (("updates", 1), ("with_initial", 0)):
        s = proxy(2, average=average, eta=0.5)
        alphas = [s.alpha()]
        for step, e in enumerate([[0.5, 0.1], [0.0, 0.9], [0.3, 0.3], [1.2, 0.0]], start=1):
            s.observe_batch(excess_stats(step, e, [2, 2]))
            alphas.append(s.alpha())
        np.testing.assert_allclose(s.average_weights(), np.mean(alphas[first:], axis=0), rtol=1e-12)
        assert s.average_weights().sum() == pytest.approx(1.0)


def token_loss(weights: np.ndarray, stats: BatchStats) -> float:
    """The engine's weighted step loss Σ_j α_j · mean token loss_j."""
    present = stats.tokens > 0
    return float(np.sum(weights[present] * stats.loss_sum[present] / stats.tokens[present]))


def test_domain_and_token_losses_agree_with_equal_token_counts() -> None:
    stats = BatchStats(
        1,
        np.array([6.0, 3.0, 9.0]),
        np.array([3, 3, 3]),
        np.array([2, 2, 2]),
        np.zeros(3),
        np.array([0.6, 0.0, 1.5]),
    )
    domain, token = proxy(3, loss="domain"), proxy(3, loss="token")
    for s in (domain, token):
        s.observe_batch(stats)
    np.testing.assert_allclose(token.loss_weights(1), domain.loss_weights(1), rtol=1e-12)
    assert token_loss(token.loss_weights(1), stats) == pytest.approx(
        token_loss(domain.loss_weights(1), stats)
    )
    # unequal counts: the token form weights skill j by α_j |T_j| / s_j, normalised
    uneven = BatchStats(1, np.array([6.0, 1.0]), np.array([3, 1]), np.array([1, 1]), np.zeros(2), np.zeros(2))
    t = proxy(2, loss="token")
    t.observe_batch(uneven)
    np.testing.assert_allclose(t.loss_weights(1), [0.75, 0.25])
    # the code's weighted token mean Σ_x w ℓ_x / Σ_x w with w = α/s
    assert token_loss(t.loss_weights(1), uneven) == pytest.approx((6.0 + 1.0) / 4)


def test_sampling_mixture_does_not_change_the_token_loss() -> None:
    """With batches drawn from s (floor allocation), the token form's per-skill weights are
    α_j m_j / Σ α_i m_i (m: tokens per example) whatever s is: reweighting by α/s undoes s."""
    sizes, m = [100, 300], np.array([3, 1])
    got = []
    for sampling in ("stratified", "random"):
        s = proxy(2, sizes=sizes, loss="token", proxy_sampling=sampling, eta=0.7, update_steps=1)
        counts = np.bincount([j for j, _ in s.sample(1, 8)], minlength=2)
        np.testing.assert_allclose(counts / 8, s.sampling)
        tokens = counts * m
        excess = tokens * np.array([0.2, 0.1])  # the same scores λ whatever the counts
        s.observe_batch(BatchStats(1, tokens * 2.0, tokens, counts, np.zeros(2), excess))
        want = s.alpha() * m / (s.alpha() * m).sum()
        np.testing.assert_allclose(s.loss_weights(1), want, rtol=1e-12)
        got.append(s.loss_weights(1))
    assert not np.allclose(proxy(2, sizes=sizes, proxy_sampling="random").sampling, [0.5, 0.5])
    np.testing.assert_allclose(got[0], got[1], rtol=1e-12)


def test_non_finite_statistics_name_the_skill_and_step() -> None:
    s = proxy(2)
    s.observe_batch(excess_stats(1, [0.1, 0.1], [1, 1]))
    bad = excess_stats(2, [0.1, float("nan")], [1, 1])
    with pytest.raises(FloatingPointError, match=r"excess loss of skill 's1' at step 2"):
        s.observe_batch(bad)
    bad = excess_stats(2, [0.1, 0.1], [1, 1])
    bad.reference_loss_sum = np.array([np.inf, 1.0])
    with pytest.raises(FloatingPointError, match=r"reference model's loss of skill 's0' at step 2"):
        s.observe_batch(bad)
    huge = proxy(2, eta=1e308)
    with pytest.raises(FloatingPointError, match="skill 's0' at step 1"):
        huge.observe_batch(excess_stats(1, [10.0, 0.0], [1, 1]))
    with pytest.raises(ValueError, match="reference"):
        proxy(2).observe_batch(BatchStats(1, np.ones(2), np.ones(2, int), np.ones(2, int)))


def test_settings_out_of_range_are_refused_naming_the_key() -> None:
    for kw, key in (
        ({"eta": 0.0}, "eta"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"loss": "x"}, "loss"),
        ({"average": "x"}, "average"),
        ({"proxy_sampling": "x"}, "proxy_sampling"),
    ):
        with pytest.raises(SkillmixInputError, match=f"doremi.{key}"):
            proxy(2, **kw)


def test_one_skill_and_resume() -> None:
    one = proxy(1)
    one.observe_batch(excess_stats(1, [0.5], [2]))
    np.testing.assert_allclose(one.alpha(), [1.0])
    np.testing.assert_allclose(one.average_weights(), [1.0])
    rng = np.random.default_rng(0)
    batches = [
        excess_stats(t, rng.uniform(0, 1, 3).tolist(), rng.integers(0, 3, 3).tolist()) for t in range(1, 9)
    ]
    whole = proxy(3, average="with_initial")
    for b in batches:
        whole.observe_batch(b)
    first = proxy(3, average="with_initial")
    for b in batches[:4]:
        first.observe_batch(b)
    state = json.loads(json.dumps(first.state_dict()))
    again = proxy(3, average="with_initial")
    again.load_state_dict(state)
    for b in batches[4:]:
        again.observe_batch(b)
    assert again.trajectory_rows() == whole.trajectory_rows()
    assert again.average_weights().tolist() == whole.average_weights().tolist()


# --- the `doremi` strategy --------------------------------------------------------------------


def test_main_run_samples_the_averaged_weights_by_skill_name(tmp_path) -> None:
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"weights": {"b": 0.6, "a": 0.1, "c": 0.3}, "stamp": {"doremi.eta": 1.0}}))
    mixture = read_mixture_file(path, ["a", "b", "c"])
    inputs = MixingInputs(["a", "b", "c"], [10, 10, 10], 0, 5, ["a", "b", "c"], mixture=mixture)
    sampler = build_sampler("doremi", inputs, strategy_settings("doremi", None))
    np.testing.assert_allclose(sampler.mixture(), [0.1, 0.6, 0.3])
    counts = np.bincount([j for step in range(1, 6) for j, _ in sampler.sample(step, 10)], minlength=3)
    assert counts.tolist() == [5, 30, 15]
    assert sampler.cost()["extra_runs"] == 2
    inputs.steps = 600  # the run's budget: the reference's steps and the proxy's (null = the same)
    assert build_sampler("doremi", inputs, strategy_settings("doremi", None)).cost()["extra_steps"] == 1200
    assert read_mixture_file(path, ["c"], stamp={"doremi.eta": 1.0}) == {"c": 0.3}
    with pytest.raises(SkillmixInputError, match=r"weights\.json: no weight for skills \['d'\]"):
        read_mixture_file(path, ["a", "d"])
    with pytest.raises(SkillmixInputError, match=r"doremi\.eta: 1\.0 there, 0\.5 now"):
        read_mixture_file(path, ["a"], stamp={"doremi.eta": 0.5})
    path.write_text(json.dumps({"a": float("nan")}))  # Python's json writes and reads NaN
    with pytest.raises(SkillmixInputError, match="skill 'a'"):
        read_mixture_file(path, ["a"])
    with pytest.raises(SkillmixInputError, match="needs the DoReMi proxy's weights"):
        build_sampler("doremi", MixingInputs(["a"], [1], 0, 5, ["a"]), {})


def test_cost_lists_the_reference_and_the_proxy() -> None:
    assert doremi_cost(600, 32, None) == {
        "extra_runs": 2,
        "extra_steps": 1200,
        "extra_examples": 38400,
        "extra_evaluations": 0,
    }
    sampler = DoReMiSampler(["a", "b"], [3, 3], 0, {"a": 1.0, "b": 1.0}, extra=doremi_cost(600, 32, 100))
    assert sampler.cost()["extra_steps"] == 700 and sampler.name == "doremi"


# --- the proxy job through the engine ---------------------------------------------------------

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2, "max_positions": 96}
MODEL = {"kind": "tiny", "seed": 0, "tiny": TINY, "max_length": 96, "device": "cpu", "precision": "fp32"}
TRAIN = {"steps": 4, "batch_size": 8, "warmup_steps": 1, "update_steps": 2, "resume_every": 2}
OUTPUTS = {
    "weights": "weights.json",
    "trajectory": "trajectory.parquet",
    "proxy_steps": "proxy_steps.parquet",
    "metrics": "job_metrics.json",
}


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    root = tmp_path_factory.mktemp("doremi")
    source = {"kind": "lego", "seed": 0, "lego": {"n_vars": 3, "examples_per_skill": 32}}
    manifest = make_slices(source, {"seed": 0, "val": 4, "test": 4}, root / "slices")
    slugs = [s["slug"] for s in manifest["skills"]]
    reference, tok = load_model({**MODEL, "seed": 1})
    save_model(reference, tok, root / "reference", MODEL)
    return root, [s["name"] for s in manifest["skills"]], slugs


def proxy_job(sliced, name: str, reference=None, doremi=None, train=None, **kw):
    root, _, slugs = sliced
    out = root / name
    kwargs = dict(
        manifest=str(root / "slices/manifest.json"),
        train=[str(root / f"slices/train/{s}.parquet") for s in slugs],
        val=[str(root / f"slices/val/{s}.parquet") for s in slugs],
        model_cfg=MODEL,
        train_cfg={**TRAIN, **(train or {})},
        eval_cfg={"batch_size": 16},
        doremi_cfg=doremi or {},
        reference_dir=str(reference or root / "reference"),
        outputs={k: str(out / f) for k, f in OUTPUTS.items()},
        stamp={"doremi.eta": 1.0, "code": "test"},
        resume=str(out / "resume"),
        **kw,
    )
    doremi_proxy_job(**kwargs)
    return out


def test_proxy_job_writes_the_weights_and_resumes_to_the_same_trajectory(sliced) -> None:
    root, skills, _ = sliced
    out = proxy_job(sliced, "whole")
    record = json.loads((out / "weights.json").read_text())
    trajectory = pd.read_parquet(out / "trajectory.parquet")
    steps = pd.read_parquet(out / "proxy_steps.parquet")
    metrics = json.loads((out / "job_metrics.json").read_text())
    assert list(record["weights"]) == skills and sum(record["weights"].values()) == pytest.approx(1.0)
    assert record["stamp"] == {"doremi.eta": 1.0, "code": "test"} == read_stamp(out / "trajectory.parquet")
    assert list(trajectory.columns) == ["step", "skill", "weight", "score"]
    assert trajectory["step"].unique().tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(trajectory.groupby("step")["weight"].sum(), 1.0)
    mean = trajectory.groupby("skill")["weight"].mean()
    np.testing.assert_allclose([record["weights"][s] for s in skills], mean[skills], rtol=1e-12)
    weights = np.array(list(record["weights"].values()))
    assert record["max_weight"] == pytest.approx(weights.max())
    assert record["entropy"] == pytest.approx(-(weights * np.log(weights)).sum())
    assert record["warnings"] == [] and record["proxy_steps"] == 4
    assert record["cost"] == {"extra_runs": 2, "extra_steps": 8, "extra_examples": 64, "extra_evaluations": 0}
    assert steps["step"].tolist() == [1, 2, 3, 4] and np.all(np.isfinite(steps["loss"]))
    np.testing.assert_allclose(steps["max_weight"], trajectory.groupby("step")["weight"].max())
    assert metrics["steps"] == 4 and metrics["resumed_from"] is None and "wall_seconds" in metrics
    assert not (out / "resume").exists()
    # interrupted after step 2, then run again: the same trajectory and weights
    stopped = proxy_job(sliced, "stopped", stop_after=2)
    assert not (stopped / "weights.json").exists() and (stopped / "resume").is_dir()
    proxy_job(sliced, "stopped")
    assert json.loads((stopped / "job_metrics.json").read_text())["resumed_from"] == 2
    again = pd.read_parquet(stopped / "trajectory.parquet")
    np.testing.assert_allclose(again[["weight", "score"]], trajectory[["weight", "score"]], rtol=1e-9)
    resumed = json.loads((stopped / "weights.json").read_text())["weights"]
    np.testing.assert_allclose(list(resumed.values()), weights, rtol=1e-9)


def test_proxy_scores_are_per_token_clipped_means_of_the_real_losses(sliced) -> None:
    """Step 1's scores, recomputed from the initial proxy's and the reference's per-token losses."""
    root, skills, slugs = sliced
    run, sampler = proxy_run(
        root / "slices/manifest.json",
        [str(root / f"slices/train/{s}.parquet") for s in slugs],
        model_cfg=MODEL,
        train_cfg={**TRAIN, "steps": 1},
        eval_cfg={},
        doremi_cfg={"proxy_steps": 1, "loss": "token"},
        reference_dir=root / "reference",
    )
    initial = {k: v.clone() for k, v in run.model.state_dict().items()}
    result = run.train()
    pairs = DoReMiProxySampler(skills, sampler.sizes, 0, V, update_steps=2).sample(1, 8)  # step 1 again
    run.model.load_state_dict(initial)
    k = len(skills)
    excess, clipped_after, tokens, loss_sum = (np.zeros(k) for _ in range(4))
    with torch.no_grad():
        for s, i in pairs:
            sets = run.train_sets
            batch = collate([sets[s].input_ids[i]], [sets[s].labels[i]], run.tokenizer.pad_token_id)
            mine, mask = label_token_losses(run.model.eval(), batch)
            ref, _ = label_token_losses(run.reference.eval(), batch)
            diff = (mine - ref)[mask.bool()]
            excess[s] += diff.clamp(min=0).sum().item()
            clipped_after[s] += diff.sum().item()
            tokens[s] += sets[s].label_counts[i]
            loss_sum[s] += mine.sum().item()
    want = excess / tokens
    np.testing.assert_allclose(sampler.lambdas[0], want, rtol=1e-4)
    assert not np.allclose(want, np.maximum(clipped_after / tokens, 0), rtol=1e-3)
    w = np.exp(sampler.log_alpha) / sampler.sampling  # the token form: Σ_x w ℓ_x / Σ_x w
    np.testing.assert_allclose(result.steps["loss"][0], (w * loss_sum).sum() / (w * tokens).sum(), rtol=1e-4)


def test_reference_of_another_tokenizer_is_refused(sliced, tmp_path) -> None:
    other, tok = load_model({**MODEL, "tiny": {**TINY, "tokenizer": "word", "vocabulary": ["a", "b"]}})
    save_model(other, tok, tmp_path / "words", MODEL)
    model, tokenizer = load_model(MODEL)
    with pytest.raises(SkillmixInputError, match=r"DoReMi reference .*words: its tokenizer"):
        load_reference(tmp_path / "words", model, tokenizer)


def test_a_diverged_reference_stops_the_proxy_naming_skill_and_step(sliced, tmp_path) -> None:
    reference, tok = load_model({**MODEL, "seed": 1})
    with torch.no_grad():
        reference.get_output_embeddings().weight.fill_(float("nan"))
    save_model(reference, tok, tmp_path / "nan", MODEL)
    with pytest.raises(FloatingPointError, match=r"reference model's loss of skill '.+' at step 1"):
        proxy_job(sliced, "nan", reference=tmp_path / "nan")
    assert not (sliced[0] / "nan" / "weights.json").exists()


def test_one_skill_writes_the_mixture_one_without_a_proxy(sliced) -> None:
    root, skills, _ = sliced
    out = proxy_job(sliced, "one", reference=root / "absent", train={"skills": [skills[1]]})
    record = json.loads((out / "weights.json").read_text())
    assert record["weights"] == {skills[1]: 1.0} and "no proxy run" in record["note"]
    assert pd.read_parquet(out / "trajectory.parquet").empty
    assert json.loads((out / "job_metrics.json").read_text())["steps"] == 0


def test_collapse_and_a_small_batch_are_warned() -> None:
    record = weights_record(
        ["a", "b", "c"],
        [0.95, 0.03, 0.02],
        stamp=None,
        doremi_cfg={},
        settings=TrainSettings(steps=10, batch_size=2),
        proxy_steps=10,
        cost=doremi_cost(10, 2, 10),
    )
    assert record["max_weight"] == 0.95 and len(record["warnings"]) == 2
    assert "0.950 on 'a'" in record["warnings"][0] and "batch_size 2" in record["warnings"][1]


def test_a_reference_made_with_other_settings_is_refused(sliced, tmp_path) -> None:
    from skillmix.infra.jobs import write_parquet

    steps = tmp_path / "steps.parquet"
    write_parquet(pd.DataFrame({"step": [1]}), steps, stamp={"train.steps": 4})
    with pytest.raises(SkillmixInputError, match=r"train\.steps: 4 there, 8 now"):
        proxy_job(sliced, "stale", reference_stamps={str(steps): {"train.steps": 8}})
