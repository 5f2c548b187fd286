"""The frozen lower layers of a decoder computed once: hidden states entering layer `start` per
prompt, and the label-word logits from there on.

When only the top layers of a model change (fine-tuning or differentiating a top-layer subset),
the layers below give the same hidden states at every step; caching them makes a step cost the
top layers only. Works for decoders laid out like Llama (Mistral, Qwen2, SmolLM2): a causal LM
with `.model.layers`, `.model.rotary_emb`, `.model.norm` and `.lm_head`. Prompts run one at a
time without padding, as the kernel stage's label-word logits do. With a head tied to the input
embeddings, gradients through the cache reach the head's output side only (the embedding
lookups are below the cache, frozen).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.masking_utils import create_causal_mask

from skillmix.engine.encoding import collate
from skillmix.infra.errors import SkillmixInputError


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    base = getattr(model, "model", None)
    if base is None or not all(hasattr(base, a) for a in ("layers", "rotary_emb", "norm")):
        raise SkillmixInputError(
            f"{type(model).__name__}: a cached prefix needs a Llama-style decoder "
            "(model.layers, model.rotary_emb, model.norm)"
        )
    if not hasattr(model, "lm_head"):
        raise SkillmixInputError(f"{type(model).__name__}: a cached prefix needs an lm_head")
    return base


class CachedPrefix:
    """Hidden states entering decoder layer `start` for each prompt (frozen layers below it, no
    gradient), and the next-token logits at each prompt's last position from there on."""

    def __init__(self, model: torch.nn.Module, prompts: Sequence[list[int]], start: int) -> None:
        base = _decoder(model)
        n_layers = len(base.layers)
        if not 0 <= start < n_layers:
            raise SkillmixInputError(f"cached prefix: start layer {start} is not in 0..{n_layers - 1}")
        self.model, self.base, self.start = model, base, start
        self.states: list[torch.Tensor] = []
        self._frames: dict[int, tuple] = {}  # prompt length -> (positions, mask, rotary embedding)
        captured: list[torch.Tensor] = []

        def grab(_module, args, kwargs):
            captured.append((args[0] if args else kwargs["hidden_states"]).detach())

        handle = base.layers[start].register_forward_pre_hook(grab, with_kwargs=True)
        device = next(model.parameters()).device
        try:
            with torch.no_grad():
                for ids in prompts:
                    captured.clear()
                    model.model(input_ids=torch.tensor([ids], device=device), use_cache=False)
                    self.states.append(captured[0])
        finally:
            handle.remove()

    def __len__(self) -> int:
        return len(self.states)

    def _frame(self, h: torch.Tensor) -> tuple:
        """Positions, causal mask and rotary embedding of a cached state's length (no weights
        enter them, so they are computed once per length)."""
        n = h.shape[1]
        if n not in self._frames:
            pos = torch.arange(n, device=h.device)[None]
            mask = create_causal_mask(
                config=self.base.config, inputs_embeds=h, attention_mask=None, cache=None, position_ids=pos
            )
            with torch.no_grad():
                emb = self.base.rotary_emb(h, position_ids=pos)
            self._frames[n] = (pos, mask, emb)
        return self._frames[n]

    def logits(self, i: int, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Next-token logits [V] (or only `rows`, e.g. the label words) at prompt i's last position,
        computed from the cached state through layers start.. (with gradients to them)."""
        h = self.states[i]
        pos, mask, emb = self._frame(h)
        for layer in self.base.layers[self.start :]:
            h = layer(h, attention_mask=mask, position_embeddings=emb, position_ids=pos, use_cache=False)
            h = h[0] if isinstance(h, tuple) else h
        last = self.base.norm(h[0, -1])
        head = self.model.lm_head
        if rows is None:
            return head(last)
        weight = head.weight[list(rows)]
        bias = head.bias[list(rows)] if getattr(head, "bias", None) is not None else None
        return torch.nn.functional.linear(last, weight, bias)


def decoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The Llama-style decoder (`.layers`, `.rotary_emb`, `.norm`, `.embed_tokens`) inside a causal LM,
    a peft model wrapping one, or the decoder itself."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = inner if hasattr(inner, "layers") else getattr(inner, "model", None)
    if base is None or not all(hasattr(base, a) for a in ("layers", "rotary_emb", "norm", "embed_tokens")):
        raise SkillmixInputError(
            f"{type(inner).__name__}: frozen lower layers need a Llama-style decoder "
            "(model.layers, model.rotary_emb, model.norm, model.embed_tokens)"
        )
    return base


class _Given(torch.nn.Module):
    """Stands in for the embedding: returns the hidden states it was given."""

    def __init__(self, states: torch.Tensor) -> None:
        super().__init__()
        self.states = states

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.states


class FrozenLowerLayers:
    """Runs a decoder's layers below `start` once per distinct token sequence.

    Installed on a model, every later plain forward pass (right-padded or unpadded batches, no
    key/value cache) takes the hidden states entering layer `start` of each row from a cache,
    filled the first time a sequence is seen, and runs only layers `start`.. and the head. Outputs
    equal the full model's (to float rounding) as long as nothing below `start` changes: every
    parameter that requires grad must sit in layer `start` or above (or in the final norm or an
    untied head), checked on install and when a new adapter reuses it. Generation (a key/value
    cache passed in), `inputs_embeds` and left-padded batches run the full model.
    """

    def __init__(self, model: torch.nn.Module, start: int) -> None:
        self.decoder = decoder_of(model)
        n_layers = len(self.decoder.layers)
        if not 0 < start < n_layers:
            raise SkillmixInputError(f"frozen lower layers: start layer {start} is not in 1..{n_layers - 1}")
        if hasattr(self.decoder, "_skillmix_frozen"):
            raise SkillmixInputError("frozen lower layers are already installed on this model")
        self.start = start
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.hits = 0
        self.misses = 0
        self._original = self.decoder.forward
        self.check_frozen(model)
        self.decoder.forward = self._forward
        self.decoder._skillmix_frozen = self

    def check_frozen(self, model: torch.nn.Module) -> None:
        """SkillmixInputError when a parameter below layer `start` (embeddings included) requires grad."""
        below = {id(p) for layer in self.decoder.layers[: self.start] for p in layer.parameters()}
        below |= {id(p) for p in self.decoder.embed_tokens.parameters()}
        moving = [n for n, p in model.named_parameters() if p.requires_grad and id(p) in below]
        if moving:
            raise SkillmixInputError(
                f"frozen lower layers from layer {self.start}: {moving[0]} (and {len(moving) - 1} more) "
                "requires grad below that layer; adapt only the top layers (select.lora.top_layers)"
            )

    def remove(self) -> None:
        """Restore the decoder's own forward and drop the cache."""
        if getattr(self.decoder, "_skillmix_frozen", None) is self:
            self.decoder.forward = self._original
            del self.decoder._skillmix_frozen
        self.cache.clear()

    def _run(self, input_ids, attention_mask, layers, norm, **kwargs):
        """The decoder's own forward with its layer list and final norm swapped for the call."""
        saved = (self.decoder.layers, self.decoder.norm)
        self.decoder.layers, self.decoder.norm = layers, norm
        try:
            return self._original(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs
            )
        finally:
            self.decoder.layers, self.decoder.norm = saved

    def _states(self, rows: list[tuple[int, ...]], device: torch.device) -> list[torch.Tensor]:
        """The hidden states entering layer `start` of each row (cached; misses run in one batch)."""
        missing = list(dict.fromkeys(r for r in rows if r not in self.cache))
        self.misses += len(missing)
        self.hits += len(rows) - len(missing)
        if missing:
            batch = collate([list(r) for r in missing], [list(r) for r in missing], 0)
            lower = torch.nn.ModuleList(self.decoder.layers[: self.start])
            with torch.no_grad():
                out = self._run(
                    batch["input_ids"].to(device),
                    batch["attention_mask"].to(device),
                    lower,
                    torch.nn.Identity(),
                ).last_hidden_state
            for i, r in enumerate(missing):
                self.cache[r] = out[i, : len(r)].detach()
        return [self.cache[r] for r in rows]

    def _forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        full = (
            input_ids is None
            or inputs_embeds is not None
            or kwargs.get("cache") is not None
            or kwargs.get("past_key_values") is not None
            or kwargs.get("position_ids") is not None
        )
        if attention_mask is not None and not full:
            lengths = attention_mask.sum(1)
            expected = (
                torch.arange(attention_mask.shape[1], device=attention_mask.device)[None] < lengths[:, None]
            )
            full = not bool((attention_mask.bool() == expected).all())  # not right-padded
        if full:
            return self._original(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
            )
        n, width = input_ids.shape
        lengths = attention_mask.sum(1).tolist() if attention_mask is not None else [width] * n
        rows = [tuple(input_ids[i, : int(length)].tolist()) for i, length in enumerate(lengths)]
        states = self._states(rows, input_ids.device)
        hidden = torch.zeros((n, width, states[0].shape[-1]), dtype=states[0].dtype, device=input_ids.device)
        for i, s in enumerate(states):
            hidden[i, : s.shape[0]] = s
        top = torch.nn.ModuleList(self.decoder.layers[self.start :])
        saved = self.decoder.embed_tokens
        self.decoder.embed_tokens = _Given(hidden)
        kwargs.pop("use_cache", None)
        try:
            return self._run(input_ids, attention_mask, top, self.decoder.norm, **kwargs)
        finally:
            self.decoder.embed_tokens = saved


def has_frozen_lower_layers(model: torch.nn.Module) -> bool:
    """Whether :class:`FrozenLowerLayers` runs some of `model`'s layers (lora.top_layers)."""
    return any(hasattr(m, "_skillmix_frozen") for m in model.modules())


def freeze_lower_layers(model: torch.nn.Module, top_layers: int) -> FrozenLowerLayers:
    """Install :class:`FrozenLowerLayers` so that only the top `top_layers` decoder layers run per
    pass; returns the installed cache (call `remove()` to undo). A model that has one installed
    from the same layer keeps it, and its cache (e.g. new adapters on the same base model)."""
    decoder = decoder_of(model)
    n_layers = len(decoder.layers)
    if not 0 < top_layers < n_layers:
        raise SkillmixInputError(
            f"top_layers {top_layers}: the model has {n_layers} layers, expected 1..{n_layers - 1}"
        )
    existing = getattr(decoder, "_skillmix_frozen", None)
    if existing is not None and existing.start == n_layers - top_layers:
        existing.check_frozen(model)
        return existing
    return FrozenLowerLayers(model, n_layers - top_layers)
