"""Exactness tests of the eNTK kernels of causal language models: label-word logits at the answer
position, their kernel against one SGD step, tied heads and batched features."""

from __future__ import annotations

import pytest
import torch
from gradient_oracles import kernel, lm_jacobians, lm_label_logits

from skillmix.infra.errors import SkillmixInputError

TINY = {
    "architecture": "llama",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "max_positions": 64,
}


@pytest.fixture(scope="module")
def tiny_lm():
    from skillmix.engine.modeling import build_tiny_model

    model, tok = build_tiny_model(TINY, seed=0)
    return model.double(), tok


def test_label_words_on_a_byte_tokenizer(tiny_lm):
    from skillmix.kernel.kernels import label_words

    _, tok = tiny_lm
    lw = label_words(tok, ["terrible", "great"])
    space = tok(" ", add_special_tokens=False)["input_ids"]
    assert lw.prefix == space and len(lw.ids) == 2 and lw.ids[0] != lw.ids[1]
    assert lw.ids == [
        tok("t", add_special_tokens=False)["input_ids"][0],
        tok("g", add_special_tokens=False)["input_ids"][0],
    ]
    shared = label_words(tok, ["ab", "ac"])
    assert shared.prefix == tok(" a", add_special_tokens=False)["input_ids"]
    for bad in (["a", "a"], ["a", "ab"], ["only"]):
        with pytest.raises(SkillmixInputError):
            label_words(tok, bad)


def test_prompt_ids_end_at_the_answer_position(tiny_lm):
    from skillmix.kernel.kernels import label_words, prompt_ids

    _, tok = tiny_lm
    lw = label_words(tok, ["0", "1"])
    ids = prompt_ids(tok, ["short", "x" * 100], lw, max_length=20)
    assert all(x[-len(lw.prefix) :] == lw.prefix for x in ids)
    assert len(ids[1]) == 20 and len(ids[0]) < 20
    assert ids[1][-len(lw.prefix) - 1] == tok("x", add_special_tokens=False)["input_ids"][0]


def test_lm_kernel_predicts_one_sgd_step(tiny_lm):
    """One ½·MSE gradient step on the label-word logits of the training prompts moves the logits of
    other prompts by −η·K·r to first order: the eNTK of the language model."""
    import copy

    from skillmix.kernel.kernels import label_words, prompt_ids

    model, tok = tiny_lm
    model = copy.deepcopy(model)
    lw = label_words(tok, ["0", "1"])
    train = prompt_ids(tok, ["a = 1 ; a =", "b = 0 ; b =", "c = 1 ; c ="], lw, 32)
    other = prompt_ids(tok, ["d = 0 ; d =", "e = 1 ; e ="], lw, 32)
    jt, jo = lm_jacobians(model, train, lw), lm_jacobians(model, other, lw)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert jt.shape == (3, 2, n_params) and jo.shape == (2, 2, n_params)
    k = kernel(jo, jt, "sgd")
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    before = lm_label_logits(model, other, lw)
    r = lm_label_logits(model, train, lw) - y
    model.train(False)
    loss = 0.5 * sum(((_logits(model, x, lw) - y[i]) ** 2).sum() for i, x in enumerate(train))
    loss.backward()
    eta = 1e-5  # Llama's RMSNorm computes in float32: its rounding (~1e-8) must stay small
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= eta * p.grad
    after = lm_label_logits(model, other, lw)
    predicted = -eta * torch.einsum("jcid,id->jc", k, r)
    scale = float(predicted.abs().max())
    assert scale > 1e-5
    torch.testing.assert_close(after - before, predicted, rtol=0, atol=1e-3 * scale)
    sign = kernel(jt, jo, "signgd")
    assert torch.equal(sign, sign.round())


def _logits(model, ids, lw):
    x = torch.tensor([ids])
    return model(input_ids=x, use_cache=False).logits[0, -1][lw.ids]


@pytest.mark.parametrize("subset", ["no_embeddings", "no_head"])
def test_a_tied_head_is_split_by_the_embedding_subsets(subset):
    from skillmix.engine.gradient_units import logit_gradients
    from skillmix.engine.modeling import build_tiny_model
    from skillmix.kernel.kernels import label_logits

    model, _ = build_tiny_model(TINY, seed=0)
    model = model.double()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    x = [5, 9, 11, 4]
    rows = [7, 8]
    want_logits = label_logits(model, x, rows).detach()
    # reference: each use of the shared weight alone, from the tied model
    emb = model.model.embed_tokens.weight
    out = model(inputs_embeds=model.model.embed_tokens(torch.tensor([x])).detach()).logits[0, -1, rows]
    (head_side,) = torch.autograd.grad(out[1], [emb])
    (both,) = torch.autograd.grad(label_logits(model, x, rows)[1], [emb])
    layout, items = logit_gradients(model, [x], lambda m, p: label_logits(m, p, rows), subset)
    names = [p.name for p in layout]
    _, grads, logits = next(items)
    torch.testing.assert_close(logits, want_logits)  # untying changes no output
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    if subset == "no_embeddings":
        assert "lm_head.weight" in names and not any("embed" in n for n in names)
        torch.testing.assert_close(grads["lm_head.weight"][1], head_side)
    else:
        assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
        torch.testing.assert_close(grads["model.embed_tokens.weight"][1], both - head_side)


@pytest.mark.parametrize("projection_dim", [None, 128])
def test_kernel_features_in_batches_equal_one_prompt_at_a_time(tiny_lm, projection_dim):
    from skillmix.kernel.kernels import label_words, lm_label_features, prompt_ids

    model, tok = tiny_lm
    lw = label_words(tok, ["terrible", "great"])
    ids = prompt_ids(tok, ["good film", "bad", "a long and dull film", "fine"], lw, 48)
    one, f_one = lm_label_features(model, ids, lw, "all", ("sgd", "sign"), projection_dim, binary=True)
    many, f_many = lm_label_features(
        model, ids, lw, "all", ("sgd", "sign"), projection_dim, binary=True, batch=3
    )
    torch.testing.assert_close(f_many, f_one)
    for t in ("sgd", "sign"):
        assert many[t].shape == one[t].shape == (4, 1, projection_dim or many[t].shape[-1])
        torch.testing.assert_close(many[t], one[t], atol=1e-5, rtol=1e-5)
