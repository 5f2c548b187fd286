"""The model's configuration alone, checked against the `model` block before any weights load:
positions against `model.max_length`, attention heads against the hidden size. Light to import
(transformers only when a pretrained model's configuration is read), so that Snakemake can run these
checks while it builds the DAG.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.inputs import looks_local

if TYPE_CHECKING:
    from transformers import PretrainedConfig

MODEL_KINDS: tuple[str, ...] = ("tiny", "pretrained", "gguf")


def check_tiny_heads(tiny: dict[str, Any]) -> None:
    """Refuse a `model.tiny` block whose attention heads do not split its hidden size (llama's rotary
    embeddings also need an even head size)."""
    hidden, heads = tiny["hidden_size"], tiny["num_heads"]
    if hidden % heads:
        raise SkillmixInputError(
            f"config model.tiny.num_heads {heads} does not divide model.tiny.hidden_size {hidden}; "
            "expected a hidden size that is a multiple of the number of heads"
        )
    if tiny["architecture"] == "llama" and (hidden // heads) % 2:
        raise SkillmixInputError(
            f"config model.tiny.hidden_size {hidden} / model.tiny.num_heads {heads} = {hidden // heads}: "
            "llama's rotary position embeddings need an even head size"
        )


def check_length(max_length: int, positions: int, where: str) -> None:
    """Refuse a `model.max_length` beyond the positions the model has (`where` names their source)."""
    if max_length > positions:
        raise SkillmixInputError(
            f"config model.max_length {max_length} exceeds the {positions} positions the model has "
            f"({where}); expected model.max_length <= {positions}, or a model with more positions"
        )


POSITION_FIELDS = ("max_position_embeddings", "n_positions")
"""Fields of a transformers config that give the number of positions a model has."""


def config_positions(config: PretrainedConfig) -> tuple[str, int] | None:
    """(field, value) of the positions a transformers config declares, or None when it declares none."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in POSITION_FIELDS:
        value = vars(text).get(name)
        if isinstance(value, int) and value > 0:
            return name, value
    return None


def check_pretrained_length(config: PretrainedConfig, max_length: int, source: str) -> None:
    """Refuse a `model.max_length` beyond the positions of a loaded config (`source` names where it
    came from, e.g. ``model.name_or_path /models/x``)."""
    found = config_positions(config)
    if found is not None:
        check_length(max_length, found[1], f"{found[0]} in the configuration of {source}")


def check_model_config(model_cfg: dict[str, Any]) -> None:
    """Check the `model` block against the model's configuration alone, before any weights load.

    The model's configuration comes from `model.tiny` (kind tiny), from the folder or cached hub name
    `model.name_or_path` (kind pretrained), or from the GGUF file's metadata (kind gguf). Raises
    :class:`SkillmixInputError` naming the keys when `model.max_length` exceeds the model's positions
    (`max_position_embeddings` / `n_positions`; `model.tiny.max_positions`) or the tiny model's
    attention heads do not split its hidden size.
    """
    model_cfg = complete("model", model_cfg)
    kind = model_cfg["kind"]
    if kind == "tiny":
        tiny = complete("model.tiny", model_cfg["tiny"])
        check_tiny_heads(tiny)
        check_length(model_cfg["max_length"], tiny["max_positions"], "model.tiny.max_positions")
    elif kind in ("pretrained", "gguf"):
        gguf_file = model_cfg["gguf_file"] if kind == "gguf" else None
        name_or_path, kwargs = model_source(
            model_cfg["name_or_path"], gguf_file, model_cfg["trust_remote_code"], model_cfg["revision"]
        )
        config = load_config(name_or_path, kwargs)
        check_pretrained_length(config, model_cfg["max_length"], _source_name(name_or_path, kwargs))
    else:
        raise SkillmixInputError(f"model.kind must be one of {MODEL_KINDS}, got {kind!r}")


def model_source(
    name_or_path: str | None, gguf_file: str | None, trust_remote_code: bool, revision: str | None
) -> tuple[str, dict[str, Any]]:
    """(folder or hub name, `from_pretrained` keyword arguments) of a pretrained or GGUF model; a
    missing local folder or GGUF file is an error naming its key."""
    if not name_or_path:
        raise SkillmixInputError("model.name_or_path is required when model.kind is pretrained or gguf")
    if gguf_file is not None and Path(gguf_file).is_absolute():
        name_or_path, gguf_file = str(Path(gguf_file).parent), Path(gguf_file).name
    local = Path(name_or_path).expanduser()  # as the workflow's input check reads it
    if local.exists():
        name_or_path = str(local)
        if gguf_file is not None and not (local / gguf_file).is_file():
            raise SkillmixInputError(f"model.gguf_file: {local / gguf_file} does not exist")
    elif looks_local(name_or_path):
        raise SkillmixInputError(f"model.name_or_path: {name_or_path} does not exist")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    return name_or_path, kwargs


def _source_name(name_or_path: str, kwargs: dict[str, Any]) -> str:
    if kwargs.get("gguf_file"):
        return f"model.gguf_file {Path(name_or_path) / kwargs['gguf_file']}"
    return f"model.name_or_path {name_or_path}"


def load_config(name_or_path: str, kwargs: dict[str, Any]) -> PretrainedConfig:
    """The transformers configuration of a model (`model_source`'s results), no weights loaded; for
    a GGUF file, the configuration transformers reads from its metadata."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise SkillmixInputError(
            f"{_source_name(name_or_path, kwargs)}: could not read the model's configuration "
            f"from local files{hub_note()}: {err}"
        ) from err


def hub_note() -> str:
    """What an error about a model that is not found adds when the hub is offline (as the workflow's
    jobs run it unless `model.download` is true)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return " (the model hub is offline for skillmix jobs; model.download: true lets them download)"
    return ""
