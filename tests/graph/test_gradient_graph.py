"""The gradient skills graph (graph.method: gradient) against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from workflow_helpers import TINY_CONFIG

from skillmix.data.sources.lego import generate_lego
from skillmix.engine.encoding import IGNORE, collate, encode_frame
from skillmix.engine.gradient_units import mean_loss_gradient
from skillmix.engine.modeling import load_model, select_runtime
from skillmix.graph.gradient import CheckpointGraph, checkpoint_graph, combine, losses_table
from skillmix.graph.options import GraphOptions
from skillmix.infra.errors import SkillmixInputError

MODEL = yaml.safe_load(TINY_CONFIG.read_text())["model"]  # the workflow tests' tiny model
RUNTIME = select_runtime("cpu", "fp32")
K = 3


@pytest.fixture(scope="module")
def skills():
    """A float64 tiny model and 3 LEGO skills: 12 training and 6 validation examples each."""
    torch.manual_seed(0)
    model, tok = load_model(MODEL)
    model = model.double()
    frame = generate_lego(K, 18, 0).examples
    train, val = [], []
    for name, rows in frame.groupby("skill", sort=True):
        train.append(encode_frame(tok, rows.iloc[:12], name, MODEL["max_length"]))
        val.append(encode_frame(tok, rows.iloc[12:], name, MODEL["max_length"]))
    return model, tok, train, val


def _flat_grad(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, materialize_grads=True)])


def lm_loss(model, input_ids, attention_mask, labels):
    """Next-token cross-entropy over the label tokens, mean (float64: Hugging Face's own loss
    casts the logits to float32)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE
    )


def direct(model, tok, train, val, transform):
    """The graph computed directly: the training batch's token-mean loss of every skill (one
    batch), the mean of each validation example's own loss."""
    model.eval()
    g_train, g_val, losses = [], [], []
    for data in train:
        b = collate(data.input_ids, data.labels, tok.pad_token_id)
        g_train.append(_flat_grad(model, lm_loss(model, b["input_ids"], b["attention_mask"], b["labels"])))
    for data in val:
        per = []
        for ids, lab in zip(data.input_ids, data.labels, strict=True):
            x = torch.tensor([ids])
            per.append(lm_loss(model, x, torch.ones_like(x), torch.tensor([lab])))
        mean = torch.stack(per).mean()
        g_val.append(_flat_grad(model, mean))
        losses.append(float(mean.detach()))
    t = torch.sign if transform == "sign" else (lambda v: v)
    lin = np.array([[float(t(g_train[i]) @ g_val[j]) for j in range(K)] for i in range(K)])
    bf = np.array(
        [
            [
                float((t((g_train[i] + g_train[j]) / 2) - t(g_train[j])) @ g_val[j]) if i != j else lin[j, j]
                for j in range(K)
            ]
            for i in range(K)
        ]
    )
    return lin, bf, np.array(losses)


@pytest.mark.parametrize("transform", ["sign", "sgd"])
def test_gradient_graph_equals_a_direct_computation(skills, transform):
    model, tok, train, val = skills
    lin, bf, losses = direct(model, tok, train, val, transform)
    assert IGNORE in train[0].labels[0]  # the prompt tokens are masked, as in training
    for emulate, want in (("linear", lin), ("brute_force", bf)):
        for batch_size in (5, 32):  # batches are summed exactly
            term = checkpoint_graph(
                "initial",
                model,
                RUNTIME,
                tok.pad_token_id,
                train,
                val,
                transform,
                batch_size=batch_size,
                emulate=emulate,
            )
            np.testing.assert_allclose(term.val_losses, losses, rtol=1e-12)
            np.testing.assert_allclose(term.products, want, rtol=1e-8, atol=1e-10 * np.abs(want).max())
    # the combined, relative graph: lr × products / L_j, then the diagonal option
    term = checkpoint_graph("initial", model, RUNTIME, tok.pad_token_id, train, val, transform)
    A = combine([term], GraphOptions(normalise="relative", diagonal=1.0), lr=0.01)
    want = 0.01 * lin / losses[None, :]
    np.fill_diagonal(want, 1.0)
    np.testing.assert_allclose(A, want, rtol=1e-10)
    raw = combine([term], GraphOptions(normalise="raw"), lr=1.0)
    np.testing.assert_allclose(raw, lin, rtol=1e-8)


def test_sign_transform_takes_the_sign_of_the_mean_not_the_mean_of_signs(skills):
    model, tok, train, val = skills
    ident = checkpoint_graph("initial", model, RUNTIME, tok.pad_token_id, train, val, "sgd")
    sign = checkpoint_graph("initial", model, RUNTIME, tok.pad_token_id, train, val, "sign")
    assert not np.allclose(ident.products, sign.products)
    # ⟨sign ḡ_j, ∇L_j⟩ > 0 whenever ⟨ḡ_j, ∇L_j⟩ is: both are descent directions of the same skill here
    assert (np.diag(ident.products) > 0).all() and (np.diag(sign.products) > 0).all()


def test_checkpoints_are_averaged_and_losses_recorded(skills):
    a = CheckpointGraph("initial", np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1.0, 2.0]), 0.0)
    b = CheckpointGraph("random", np.array([[3.0, 0.0], [1.0, 0.0]]), np.array([2.0, 4.0]), 0.0)
    A = combine([a, b], GraphOptions(normalise="relative"), lr=2.0)
    np.testing.assert_allclose(A, 2.0 * (np.array([[1, 1], [3, 2]]) + np.array([[1.5, 0], [0.5, 0]])) / 2)
    table = losses_table([a, b], ["s1", "s2"])
    assert table.to_dict("list") == {
        "unit": ["initial", "initial", "random", "random"],
        "step": [0, 0, 0, 0],
        "skill": ["s1", "s2", "s1", "s2"],
        "loss": [1.0, 2.0, 2.0, 4.0],
    }
    with pytest.raises(SkillmixInputError, match="not positive"):
        combine(
            [CheckpointGraph("x", np.eye(2), np.array([0.0, 1.0]), 0.0)], GraphOptions(normalise="relative")
        )


def test_bad_settings_are_named(skills):
    model, tok, train, val = skills
    with pytest.raises(SkillmixInputError, match="graph.gradient.transform"):
        checkpoint_graph("initial", model, RUNTIME, tok.pad_token_id, train, val, "adam")
    with pytest.raises(SkillmixInputError, match="graph.gradient.emulate"):
        checkpoint_graph("initial", model, RUNTIME, tok.pad_token_id, train, val, emulate="pairs")
    with pytest.raises(SkillmixInputError, match="one training and one validation set"):
        checkpoint_graph("initial", model, RUNTIME, tok.pad_token_id, train, val[:2])
    with pytest.raises(SkillmixInputError, match="reduction"):
        mean_loss_gradient(model, RUNTIME, tok.pad_token_id, train[0], reduction="sum")


def test_gradient_graph_in_the_workflow(tmp_path):
    """graph.method: gradient needs no graph runs; Skill-It trains from it; outputs like the others."""
    import json

    import pandas as pd
    from workflow_helpers import MAIN_CONFIG, job_stats, run_ok, write_yaml

    override = write_yaml(
        tmp_path / "g.yaml", {"graph": {"method": "gradient", "gradient": {"train_examples": 16}}}
    )
    configs = (MAIN_CONFIG, TINY_CONFIG, override)
    plan = run_ok(tmp_path, "-n", configs=configs)
    stats = job_stats(plan.output)
    assert "graph_run" not in stats and "graph_assemble" not in stats, plan.output
    assert stats["graph_gradient"] == 1 and stats["train"] == 3, plan.output
    result = run_ok(tmp_path, "results/graph/gradient/heatmap.png", configs=configs)
    assert job_stats(result.output) == {"slice": 1, "graph_gradient": 1}, result.output
    folder = tmp_path / "results/graph/gradient"
    manifest = json.loads((tmp_path / "results/slices/manifest.json").read_text())
    names = [s["name"] for s in manifest["skills"]]
    A = np.load(folder / "adjacency.npy")
    assert A.shape == (K, K) and np.isfinite(A).all()
    np.testing.assert_array_equal(np.diag(A), np.ones(K))  # the tiny config's assemble.diagonal: 1.0
    info = json.loads((folder / "graph.json").read_text())
    assert info["method"] == "gradient" and info["extra"]["lr"] == 0.003  # graph.runs.lr of config.yaml
    products = np.array(info["extra"]["products"]["initial"])
    raw = pd.read_parquet(folder / "raw.parquet")
    assert list(raw["skill"]) == names and set(raw["unit"]) == {"initial"}
    want = 0.003 * products / raw["loss"].to_numpy()[None, :]
    off = ~np.eye(K, dtype=bool)
    np.testing.assert_allclose(A[off], want[off], rtol=1e-12)
    # a setting of the gradient graph re-runs it and Skill-It, nothing else before them
    change = write_yaml(tmp_path / "t.yaml", {"graph": {"gradient": {"transform": "sgd"}}})
    again = run_ok(tmp_path, "-n", "results/train/skillit/steps.parquet", configs=(*configs, change))
    assert job_stats(again.output) == {"graph_gradient": 1, "train": 1}, again.output


def test_gradient_graph_example_config_is_a_valid_override(tmp_path):
    from workflow_helpers import MAIN_CONFIG, REPO, job_stats, run_ok

    example = REPO / "examples" / "gradient_graph" / "config.yaml"
    result = run_ok(tmp_path, "-n", configs=(MAIN_CONFIG, example))
    stats = job_stats(result.output)
    assert stats.get("graph_gradient") == 1 and "graph_run" not in stats, result.output


def test_gradient_graph_at_a_trained_checkpoint(tmp_path):
    """A strategy named in graph.gradient.checkpoints is trained first and its saved model, the
    rule's input, is where the second term of the graph is taken."""
    import json

    from workflow_helpers import MAIN_CONFIG, job_stats, run_ok, write_yaml

    override = write_yaml(
        tmp_path / "g.yaml",
        {
            "graph": {
                "method": "gradient",
                "gradient": {"train_examples": 8, "checkpoints": ["initial", "random"]},
            }
        },
    )
    configs = (MAIN_CONFIG, TINY_CONFIG, override)
    result = run_ok(tmp_path, "results/graph/gradient/adjacency.npy", configs=configs)
    assert job_stats(result.output) == {"slice": 1, "train": 1, "graph_gradient": 1}, result.output
    info = json.loads((tmp_path / "results/graph/gradient/graph.json").read_text())
    products = info["extra"]["products"]
    assert set(products) == {"initial", "random"}
    assert not np.allclose(products["initial"], products["random"])  # two different models
