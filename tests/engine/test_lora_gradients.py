"""Batched per-example LoRA gradients, Adam/sign features and the optimizer-state mapping."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from gradient_oracles import example_gradients

from skillmix.engine.encoding import IGNORE, EncodedSet, collate, encode_row, per_example_loss
from skillmix.engine.feature_transforms import AdamState, Transform
from skillmix.engine.lora_gradients import ParamSlice, PerExampleGradients, lora_parameters, optimizer_moments
from skillmix.engine.modeling import load_model, select_runtime
from skillmix.infra.errors import SkillmixInputError

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4, "max_positions": 64}
TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "gpt2": ["c_attn"]}
ROWS = [
    ("a = 1 ?", "one"),
    ("Input: b = not a , a = 1 . Output:", "0"),
    ("x?", "a much longer answer here"),
    ("Question: what is 2 + 2 ?", "4"),
    ("hi", "hello there"),
]
RUNTIME = select_runtime("cpu", "fp32")


def make_model(arch: str = "llama", dtype: torch.dtype = torch.float32):
    cfg = {
        "kind": "tiny",
        "seed": 0,
        "tiny": {**TINY, "architecture": arch},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.1, "target_modules": TARGETS[arch]},
    }
    model, tok = load_model(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft initialises B = 0, which would make every A gradient zero
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.to(dtype), tok


def encoded(tok, rows=ROWS, max_length: int = 48) -> EncodedSet:
    data = EncodedSet(skill="s", ids=[], input_ids=[], labels=[])
    for i, (prompt, answer) in enumerate(rows):
        ids, labels, _, _ = encode_row(tok, prompt, answer, "", max_length)
        data.ids.append(f"ex{i}")
        data.input_ids.append(ids)
        data.labels.append(labels)
    return data


def reference(model, input_ids: list[int], labels: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """One example, plain autograd: its mean label-token loss, .backward(), p.grad."""
    model.eval()
    model.zero_grad(set_to_none=True)
    batch = collate([input_ids], [labels], pad_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    per_example_loss(logits, batch["labels"])[0].backward()
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize(
    ("arch", "dtype", "rtol", "atol"),
    [
        ("llama", torch.float64, 1e-10, 1e-12),
        ("gpt2", torch.float64, 1e-10, 1e-12),
        ("llama", torch.float32, 1e-5, 1e-7),
    ],
)
def test_batched_equals_one_at_a_time(arch, dtype, rtol, atol) -> None:
    model, tok = make_model(arch, dtype)
    data = encoded(tok)
    params = lora_parameters(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [p.name for p in params] == [n for n, _ in trainable]
    assert [p.shape for p in params] == [tuple(t.shape) for _, t in trainable]
    assert sum(math.prod(p.shape) for p in params) == sum(t.numel() for _, t in trainable)
    assert [p.offset for p in params] == [
        sum(math.prod(q.shape) for q in params[:i]) for i in range(len(params))
    ]
    if arch == "llama":  # per layer q.A, q.B, k.A, k.B, v.A, v.B, o.A, o.B
        kinds = [n.split(".")[-4] + "." + n.split(".")[-3][-1] for n in [p.name for p in params[:8]]]
        assert kinds == ["q_proj.A", "q_proj.B", "k_proj.A", "k_proj.B", "v_proj.A", "v_proj.B"] + [
            "o_proj.A",
            "o_proj.B",
        ]
    pad = tok.pad_token_id
    refs = [reference(model, x, y, pad) for x, y in zip(data.input_ids, data.labels, strict=True)]
    assert all(float(r[params[0].name].abs().sum()) > 0 for r in refs)  # A gradients are non-zero
    with PerExampleGradients(model, RUNTIME, pad) as engine:
        grads = engine(data.input_ids, data.labels)
        flat = engine.flat(data.input_ids, data.labels)
        assert engine.dim == flat.shape[1]
        # the shortest example alone (no padding) equals its row in the padded batch
        short = min(range(len(data)), key=lambda i: len(data.input_ids[i]))
        alone = engine.flat([data.input_ids[short]], [data.labels[short]])
    assert all(p.grad is None for p in model.parameters())  # the engine leaves .grad alone
    assert flat.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert list(grads) == [p.name for p in params]
    for b, ref in enumerate(refs):
        for p in params:
            got = grads[p.name][b]
            want = ref[p.name].to(got.dtype)
            assert got.shape == p.shape
            scale = float(want.abs().max())
            torch.testing.assert_close(got, want, rtol=rtol, atol=atol + rtol * scale)
        ref_flat = torch.cat([ref[p.name].reshape(-1) for p in params]).to(flat.dtype)
        torch.testing.assert_close(
            flat[b], ref_flat, rtol=rtol, atol=atol + rtol * float(ref_flat.abs().max())
        )
    scale = float(flat[short].abs().max())
    torch.testing.assert_close(alone[0], flat[short], rtol=rtol, atol=atol + rtol * scale)


def test_dropout_is_off() -> None:
    model, tok = make_model()
    model.train()
    data = encoded(tok)
    with PerExampleGradients(model, RUNTIME, tok.pad_token_id) as engine:
        assert not model.training
        first = engine.flat(data.input_ids, data.labels)
        model.train()  # even if someone switches back, every call runs in eval mode
        second = engine.flat(data.input_ids, data.labels)
    assert torch.equal(first, second)


def test_hooks_removed_after_close() -> None:
    model, tok = make_model()
    data = encoded(tok)
    engine = PerExampleGradients(model, RUNTIME, tok.pad_token_id)
    engine.close()
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError):
        engine(data.input_ids, data.labels)


def _optimizer_after_steps(model, tok, data, two_groups: bool):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    betas, eps = (0.8, 0.95), 1e-6
    if two_groups:
        half = len(named) // 2
        groups = [
            {"params": [p for _, p in named[:half]], "lr": 1e-2},
            {"params": [p for _, p in named[half:]], "lr": 5e-3},
        ]
    else:
        groups = [{"params": [p for _, p in named]}]
    opt = torch.optim.AdamW(groups, lr=1e-2, betas=betas, eps=eps, weight_decay=0.0)
    model.train()
    batch = collate(data.input_ids, data.labels, tok.pad_token_id)
    for _ in range(3):
        opt.zero_grad()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_example_loss(logits, batch["labels"]).mean().backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return opt, named, betas, eps


def adam_feature(g, m, v, b1, b2, e, variant):
    """The engine's Adam transform of gradient rows g over one flat parameter of len(m) entries."""
    return Transform("adam", AdamState(m, v, b1, b2, e, variant))(g, ParamSlice("flat", (len(m),), 0))


@pytest.mark.parametrize("two_groups", [False, True])
def test_adam_feature_from_real_optimizer_state(two_groups: bool) -> None:
    model, tok = make_model()
    data = encoded(tok)
    opt, named, betas, eps = _optimizer_after_steps(model, tok, data, two_groups)
    params = lora_parameters(model)
    m, v, b1, b2, e = optimizer_moments(opt.state_dict(), params)
    assert (b1, b2, e) == (betas[0], betas[1], eps)
    want_m = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for _, p in named])
    want_v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for _, p in named])
    assert torch.equal(m, want_m) and torch.equal(v, want_v)
    assert float(v.min()) >= 0 and float(v.max()) > 0
    g = example_gradients(model, data, RUNTIME, tok.pad_token_id)[0]
    less = adam_feature(g, m, v, b1, b2, e, variant="less")
    adam = adam_feature(g, m, v, b1, b2, e, variant="adam")
    assert less.shape == adam.shape == g.shape
    for b in range(g.shape[0]):
        for j in range(0, g.shape[1], 97):  # elementwise hand computation on a stride of coordinates
            gg, mm, vv = float(g[b, j]), float(m[j]), float(v[j])
            m2 = b1 * mm + (1 - b1) * gg
            v2 = b2 * vv + (1 - b2) * gg * gg
            assert float(less[b, j]) == pytest.approx(m2 / math.sqrt(v2 + e), rel=1e-5, abs=1e-6)
            assert float(adam[b, j]) == pytest.approx(m2 / (math.sqrt(v2) + e), rel=1e-5, abs=1e-6)
    # vectorised hand computation, all coordinates
    m2 = b1 * m + (1 - b1) * g
    v2 = b2 * v + (1 - b2) * g**2
    torch.testing.assert_close(less, m2 / torch.sqrt(v2 + e))
    torch.testing.assert_close(adam, m2 / (torch.sqrt(v2) + e))
    assert not torch.allclose(less, adam)
    assert torch.equal(Transform("sign")(g), torch.sign(g))
    with pytest.raises(SkillmixInputError, match="variant"):
        adam_feature(g, m, v, b1, b2, e, variant="adamw")


def test_optimizer_moments_errors() -> None:
    model, tok = make_model()
    params = lora_parameters(model)
    fresh = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    with pytest.raises(SkillmixInputError, match="exp_avg"):
        optimizer_moments(fresh.state_dict(), params)
    opt, _, _, _ = _optimizer_after_steps(model, tok, encoded(tok), two_groups=False)
    state = opt.state_dict()
    with pytest.raises(SkillmixInputError, match="trainable"):
        optimizer_moments(state, params[:-1])
    state["state"][0]["exp_avg"] = state["state"][0]["exp_avg"][:1]
    with pytest.raises(SkillmixInputError, match="shape"):
        optimizer_moments(state, params)


def test_example_without_labels_is_excluded(caplog) -> None:
    model, tok = make_model()
    data = encoded(tok)
    data.labels[1] = [IGNORE] * len(data.labels[1])
    # an answer truncated away: only the first position carries a label, which is never predicted
    data.labels[3] = [data.input_ids[3][0]] + [IGNORE] * (len(data.labels[3]) - 1)
    with caplog.at_level(logging.WARNING, logger="skillmix.engine.lora_gradients"):
        rows, kept, excluded = example_gradients(model, data, RUNTIME, tok.pad_token_id, batch_size=4)
    assert excluded == ["ex1", "ex3"]
    assert kept == ["ex0", "ex2", "ex4"]
    assert rows.shape[0] == 3 and bool(torch.isfinite(rows).all())
    assert "ex1" in caplog.text and "ex3" in caplog.text
    with PerExampleGradients(model, RUNTIME, tok.pad_token_id) as engine:
        with pytest.raises(SkillmixInputError, match="ex1"):
            engine(data.input_ids, data.labels, data.ids)


def test_nan_raises_naming_the_example() -> None:
    model, tok = make_model()
    rows = [("a = 1 ?", "one"), ("b = 2 ?", "two ~"), ("c = 3 ?", "three")]  # "~" only in ex1
    data = encoded(tok, rows)
    tilde = tok("~", add_special_tokens=False)["input_ids"][0]
    # untie the input embedding from the output head, then poison the row of "~"
    emb = torch.nn.Embedding.from_pretrained(model.get_input_embeddings().weight.detach().clone())
    emb.weight.data[tilde] = float("nan")
    model.set_input_embeddings(emb)
    with pytest.raises(FloatingPointError, match="ex1"):
        example_gradients(model, data, RUNTIME, tok.pad_token_id)


def test_same_rows_for_any_batch_size() -> None:
    model, tok = make_model()
    rows = ROWS + [("p" * (i + 1), "q" * (7 - i)) for i in range(6)]
    data = encoded(tok, rows)
    results = {
        bs: example_gradients(model, data, RUNTIME, tok.pad_token_id, batch_size=bs) for bs in (1, 3, 16)
    }
    base, ids, excluded = results[1]
    assert ids == data.ids and excluded == []
    assert base.shape == (len(data), sum(math.prod(p.shape) for p in lora_parameters(model)))
    for bs in (3, 16):
        got, got_ids, _ = results[bs]
        assert got_ids == ids
        torch.testing.assert_close(got, base, rtol=1e-5, atol=1e-6 * float(base.abs().max()))


def test_rejects_non_lora_trainable_parameters() -> None:
    model, _ = make_model()
    model.get_input_embeddings().weight.requires_grad_(True)
    with pytest.raises(SkillmixInputError, match="not a LoRA"):
        lora_parameters(model)
