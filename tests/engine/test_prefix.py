"""The cached prefix: the frozen lower layers computed once give the full model's logits and, for
the parameters of the top layers, the full model's gradients."""

from __future__ import annotations

import pytest
import torch

from skillmix.engine.modeling import build_tiny_model
from skillmix.engine.prefix import CachedPrefix
from skillmix.infra.errors import SkillmixInputError

TINY = {"architecture": "llama", "hidden_size": 32, "intermediate_size": 64, "num_layers": 3, "num_heads": 4}


@pytest.fixture(scope="module")
def tiny():
    model, _ = build_tiny_model(TINY, seed=0)
    model.eval()
    gen = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    prompts = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in (5, 9, 1, 7)]
    return model, prompts


@pytest.mark.parametrize("start", [0, 1, 2])
def test_cached_logits_equal_the_full_model(tiny, start):
    model, prompts = tiny
    cache = CachedPrefix(model, prompts, start)
    assert len(cache) == len(prompts)
    rows = [4, 7, 11]
    for i, ids in enumerate(prompts):
        with torch.no_grad():
            full = model(input_ids=torch.tensor([ids])).logits[0, -1]
            got = cache.logits(i)
            torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(cache.logits(i, rows), full[rows], atol=1e-5, rtol=1e-5)


def test_cached_gradients_equal_the_full_model_for_the_top_layers(tiny):
    model, prompts = tiny
    cache = CachedPrefix(model, prompts, 2)
    top = dict(model.model.layers[2].named_parameters())
    head = model.lm_head.weight
    assert head is model.model.embed_tokens.weight  # the tiny model ties its head
    rows = [4, 7]
    for i, ids in enumerate(prompts):
        x = torch.tensor([ids])
        f = model(input_ids=x).logits[0, -1, rows]
        want = torch.autograd.grad(f[1] - f[0], list(top.values()))
        g = cache.logits(i, rows)
        got = torch.autograd.grad(g[1] - g[0], [*top.values(), head])
        for name, a, b in zip(top, got[:-1], want, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
        # a tied head: the cache sees only its output side (the input embeddings are frozen below
        # the cache), the full model's gradient with the embedding lookup detached
        out = model(inputs_embeds=model.model.embed_tokens(x).detach()).logits[0, -1, rows]
        (want_head,) = torch.autograd.grad(out[1] - out[0], [head])
        torch.testing.assert_close(got[-1], want_head, atol=1e-5, rtol=1e-4)
    # the lower layers are not part of the cached computation: no gradient reaches them
    g = cache.logits(0, rows)
    low = model.model.layers[1].self_attn.o_proj.weight
    assert torch.autograd.grad(g.sum(), [low], allow_unused=True)[0] is None


def test_cached_prefix_rejects_bad_layers_and_models(tiny):
    model, prompts = tiny
    with pytest.raises(SkillmixInputError, match="start layer 3 is not in 0..2"):
        CachedPrefix(model, prompts, 3)
    with pytest.raises(SkillmixInputError, match="Llama-style decoder"):
        CachedPrefix(torch.nn.Linear(2, 2), prompts, 0)
