"""The cached prefix: the frozen lower layers computed once give the full model's logits and, for
the parameters of the top layers, the full model's gradients."""

from __future__ import annotations

import pytest
import torch

from skillmix.engine.frozen_prefix import CachedPrefix
from skillmix.engine.modeling import build_tiny_model
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


def _lora_top(model, layers):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=layers)
    return get_peft_model(model, config)


def _batch(prompts, pad=0):
    from skillmix.engine.encoding import collate

    return collate(prompts, prompts, pad)


def test_frozen_lower_layers_give_the_full_model_and_its_lora_gradients():
    from skillmix.engine.encoding import per_example_loss
    from skillmix.engine.frozen_prefix import freeze_lower_layers

    model, _ = build_tiny_model(TINY, seed=0)
    model = _lora_top(model, [2])
    for p in model.parameters():  # non-zero B, so both A and B get gradients
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 50, (n,), generator=gen).tolist() for n in (6, 9, 2, 9)]
    batch = _batch(prompts)
    params = [p for p in model.parameters() if p.requires_grad]

    def run():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = per_example_loss(logits, batch["labels"])
        return logits.detach(), loss.detach(), torch.autograd.grad(loss.sum(), params)

    want = run()
    frozen = freeze_lower_layers(model, 1)
    assert frozen.start == 2
    got = run()
    assert frozen.misses == 4 and frozen.hits == 0
    again = run()
    assert frozen.misses == 4 and frozen.hits == 4  # the second pass takes every row from the cache
    for a, b in ((got, want), (again, want)):
        mask = batch["attention_mask"].bool()
        torch.testing.assert_close(a[0][mask], b[0][mask], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=1e-5)
        for ga, gb in zip(a[2], b[2], strict=True):
            torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-4)
    # generation (a key/value cache) runs the full model and still agrees
    out = model.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=3, do_sample=False)
    frozen.remove()
    ref = model.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=3, do_sample=False)
    assert out.tolist() == ref.tolist()


def test_frozen_lower_layers_refuse_trainable_weights_below_the_cut():
    from skillmix.engine.frozen_prefix import freeze_lower_layers

    model, _ = build_tiny_model(TINY, seed=0)
    model = _lora_top(model, [0, 2])
    with pytest.raises(SkillmixInputError, match=r"layers\.0\..*requires grad below"):
        freeze_lower_layers(model, 1)
    with pytest.raises(SkillmixInputError, match="top_layers 3"):
        freeze_lower_layers(model, 3)


def test_lora_top_layers_adapt_the_top_layers_and_the_engine_sees_the_full_gradients():
    from skillmix.engine.lora_gradients import PerExampleGradients
    from skillmix.engine.modeling import apply_lora, select_runtime
    from skillmix.infra.config import complete

    model, _ = build_tiny_model(TINY, seed=0)
    lora = complete("select.lora", {"r": 4, "alpha": 8, "dropout": 0.0, "top_layers": 2})
    model = apply_lora(model, lora)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n or ".layers.2." in n for n in names)
    frozen = model.get_base_model().model._skillmix_frozen
    assert frozen.start == 1
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    gen = torch.Generator().manual_seed(5)
    rows = [torch.randint(3, 50, (n,), generator=gen).tolist() for n in (5, 8, 3)]
    labels = [[-100] * 2 + r[2:] for r in rows]
    runtime = select_runtime("cpu", "fp32")
    with PerExampleGradients(model, runtime, 0) as engine:
        cached = engine.flat(rows, labels)
        assert frozen.misses == 3
        frozen.remove()
        full = engine.flat(rows, labels)
    torch.testing.assert_close(cached, full, atol=1e-6, rtol=1e-4)
    assert float(full.abs().max()) > 0
