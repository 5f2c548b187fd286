"""Models: a tiny causal LM built from config, any Hugging Face causal LM, or a GGUF file.

One code path for CPU and CUDA: the device is chosen once, the weights stay float32 on CPU
and training/evaluation run under bf16 autocast where the GPU supports it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from skillmix.engine.model_config import (
    MODEL_KINDS,
    check_length,
    check_pretrained_length,
    check_tiny_heads,
    hub_note,
    model_source,
)
from skillmix.engine.tokenizers import tiny_tokenizer
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_directory

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Where and in which precision a model runs."""

    device: torch.device
    autocast_dtype: torch.dtype | None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context manager for the forward pass (bf16 autocast on CUDA when enabled)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def select_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Choose the device (CUDA when present) and the autocast precision.

    `precision`: "auto" (bf16 on a CUDA device that supports it, else fp32), "fp32" or "bf16".
    In a multi-process GPU job, `auto` and `cuda` mean this process's GPU.
    """
    from skillmix.infra.processes import local_device

    if device in ("auto", "cuda") and local_device() is not None:
        device = local_device()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SkillmixInputError(f"model.device is {device!r} but no CUDA device is available")
    dev = torch.device(device)
    if precision not in ("auto", "fp32", "bf16"):
        raise SkillmixInputError(f"model.precision must be auto, fp32 or bf16, got {precision!r}")
    use_bf16 = precision == "bf16" or (
        precision == "auto" and dev.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    return Runtime(dev, torch.bfloat16 if use_bf16 else None)


TINY_ARCHITECTURES: dict[str, tuple[tuple[str, str, str], dict[str, tuple[str, ...]], dict[str, Any]]] = {
    "llama": (
        ("llama", "LlamaConfig", "LlamaForCausalLM"),
        {
            "hidden_size": ("hidden_size",),
            "intermediate_size": ("intermediate_size",),
            "num_layers": ("num_hidden_layers",),
            "num_heads": ("num_attention_heads", "num_key_value_heads"),
            "max_positions": ("max_position_embeddings",),
        },
        {"tie_word_embeddings": True},
    ),
    "gpt2": (
        ("gpt2", "GPT2Config", "GPT2LMHeadModel"),
        {
            "hidden_size": ("n_embd",),
            "intermediate_size": ("n_inner",),
            "num_layers": ("n_layer",),
            "num_heads": ("n_head",),
            "max_positions": ("n_positions",),
        },
        {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    ),
}
"""Per `model.tiny.architecture`: its transformers classes (the model's folder in
`transformers.models`, the config class, the causal-LM class), the config fields each
`model.tiny` key sets, and the fixed fields (tied embeddings; no dropout)."""


def tiny_classes(arch: str) -> tuple[type, type]:
    """The config and causal-LM classes of a tiny architecture, imported from their own modules
    (not through transformers' auto registry, which a job building a tiny model does not need)."""
    model, config_name, model_name = TINY_ARCHITECTURES[arch][0]
    package = f"transformers.models.{model}"
    config_class = getattr(importlib.import_module(f"{package}.configuration_{model}"), config_name)
    model_class = getattr(importlib.import_module(f"{package}.modeling_{model}"), model_name)
    return config_class, model_class


def tiny_config(tiny: dict[str, Any], vocab_size: int, pad_id: int, eos_id: int):
    """A transformers config for the tiny model (`architecture`: llama or gpt2)."""
    arch = tiny["architecture"]
    if arch not in TINY_ARCHITECTURES:
        raise SkillmixInputError(
            f"model.tiny.architecture must be one of {', '.join(TINY_ARCHITECTURES)}, got {arch!r}"
        )
    check_tiny_heads(tiny)
    _, fields, fixed = TINY_ARCHITECTURES[arch]
    config_class = tiny_classes(arch)[0]
    values = {name: tiny[key] for key, names in fields.items() for name in names}
    special = dict(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=None)
    return config_class(**values, **fixed, **special)


def build_tiny_model(tiny: dict[str, Any], seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A freshly initialised tiny causal LM and its tokenizer; same seed, same weights.

    `tiny` is a `model.tiny` block; keys it lacks take the schema's defaults.
    """
    tiny = complete("model.tiny", tiny)
    tokenizer = tiny_tokenizer(tiny)
    config = tiny_config(tiny, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # what AutoModelForCausalLM.from_config does for a transformers architecture
        model = tiny_classes(tiny["architecture"])[1]._from_config(config)
    return model, tokenizer


WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def weight_dtype(name: str, device: str = "auto") -> torch.dtype:
    """The dtype of `model.dtype`: float32, bfloat16, float16, or auto (bfloat16 on a CUDA device that
    supports it, else float32)."""
    if name == "auto":
        cuda = device != "cpu" and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    if name not in WEIGHT_DTYPES:
        raise SkillmixInputError(f"model.dtype must be auto or one of {list(WEIGHT_DTYPES)}, got {name!r}")
    return WEIGHT_DTYPES[name]


def load_model(model_cfg: dict[str, Any]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer named by the `model` config block (on CPU, weights in `model.dtype`).

    kind `tiny` builds from `model.tiny` with `model.seed`; `pretrained` loads
    `model.name_or_path` (a local folder, or a hub name already in the local cache);
    `gguf` loads `model.gguf_file` from the folder or repo `model.name_or_path`.
    A block that sets `model.max_length` is checked against the model's positions (as
    `check_model_config` does); the tiny model's heads are always checked.
    `model.gradient_checkpointing` recomputes each layer's activations in the backward pass
    (transformers' gradient checkpointing, non-reentrant) instead of keeping them.
    """
    length_set = model_cfg is not None and "max_length" in model_cfg
    model_cfg = complete("model", model_cfg)
    kind = model_cfg["kind"]
    dtype = weight_dtype(model_cfg["dtype"], model_cfg["device"])
    if kind == "tiny":
        if length_set:
            positions = model_cfg["tiny"]["max_positions"]
            check_length(model_cfg["max_length"], positions, "model.tiny.max_positions")
        model, tokenizer = build_tiny_model(model_cfg["tiny"], model_cfg["seed"])
        model.to(dtype)
    elif kind in ("pretrained", "gguf"):
        model, tokenizer = load_pretrained(
            model_cfg["name_or_path"],
            gguf_file=model_cfg["gguf_file"] if kind == "gguf" else None,
            trust_remote_code=model_cfg["trust_remote_code"],
            revision=model_cfg["revision"],
            dtype=dtype,
        )
        if length_set:
            key = "gguf_file" if kind == "gguf" else "name_or_path"
            check_pretrained_length(model.config, model_cfg["max_length"], f"model.{key} {model_cfg[key]}")
    else:
        raise SkillmixInputError(f"model.kind must be one of {MODEL_KINDS}, got {kind!r}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model_cfg["gradient_checkpointing"]:
        # transformers 5 renames it activation checkpointing; older versions have the first name only
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if model_cfg["lora"]["enabled"]:
        model = apply_lora(model, model_cfg["lora"])
    return model, tokenizer


def load_pretrained(
    name_or_path: str | None,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A Hugging Face causal LM (weights in `dtype`) and its tokenizer from a folder, a cached hub
    name or a GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name_or_path, kwargs = model_source(name_or_path, gguf_file, trust_remote_code, revision)
    gguf_file = kwargs.get("gguf_file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    except OSError as err:
        raise SkillmixInputError(
            f"model.name_or_path: could not load {name_or_path!r} (gguf_file={gguf_file!r}) "
            f"from local files{hub_note()}: {err}"
        ) from err
    if gguf_file:
        # the GGUF tensors are dequantised on loading: a plain float model, saved like any other
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model, tokenizer


def apply_lora(model: PreTrainedModel, lora: dict[str, Any]) -> PreTrainedModel:
    """Wrap `model` with peft LoRA adapters (r, alpha, dropout, target_modules from `lora`, a
    complete `model.lora`-style block).

    With `top_layers` N, only the top N decoder layers get adapters and the layers below run
    once per distinct example (`skillmix.engine.frozen_prefix.FrozenLowerLayers`, Llama-style decoders).
    """
    from peft import LoraConfig, get_peft_model

    from skillmix.engine.frozen_prefix import decoder_of, freeze_lower_layers

    top = lora.get("top_layers")
    layers = None
    if top is not None:
        n_layers = len(decoder_of(model).layers)
        if not 0 < top < n_layers:
            raise SkillmixInputError(
                f"lora.top_layers {top}: the model has {n_layers} layers, expected 1..{n_layers - 1}"
            )
        layers = list(range(n_layers - top, n_layers))
    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    if top is not None:
        frozen = freeze_lower_layers(peft_model, top)
        log.info("LoRA on the top %d layers; layers below %d run once per example", top, frozen.start)
    return peft_model


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | os.PathLike,
    model_cfg: dict[str, Any] | None = None,
) -> None:
    """Write a trained model and its tokenizer as a Hugging Face folder, atomically.

    A LoRA model also writes its adapter as a peft folder in `out_dir/adapter` (what
    `peft.PeftModel.from_pretrained(base, out_dir/adapter)` loads); the folder itself holds the
    weights with the adapter merged in, in `model.save_dtype` (float32 or bfloat16).
    """
    save_dtype = WEIGHT_DTYPES[complete("model", model_cfg)["save_dtype"]]
    with atomic_directory(out_dir) as tmp:
        if hasattr(model, "merge_and_unload"):
            model.save_pretrained(tmp / "adapter")
            tokenizer.save_pretrained(tmp / "adapter")
            model = model.merge_and_unload()
        if save_dtype != model.dtype:
            model = model.to(save_dtype)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def load_saved(model_dir: str | os.PathLike) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a folder written by `save_model` (float32, CPU); a truncated or damaged weights file is
    an error naming the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skillmix.infra.artefacts import check_saved_model

    check_saved_model(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
