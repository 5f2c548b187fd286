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
