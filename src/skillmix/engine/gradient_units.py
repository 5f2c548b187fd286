"""The gradient units of the one feature engine for LESS, the eNTK kernels and the gradient skills
graph (docs/methods/entk.md#feature-engine).

A feature is φ(u) = Π(T(∇_θ u)) for a unit u, over a parameter subset S (`select_parameters`).
This module yields the gradients ∇_θ u of the units: an example's loss
(`example_loss_gradients`), an (example, logit) pair (`logit_gradients`), or the mean loss of a
whole set such as one skill (`mean_loss_gradient`), each as per-parameter gradient tensors with
leading row axes. The transforms T, the projection Π, the feature maps and the Gram matrices are
in `skillmix.engine.feature_transforms`.

The LESS datastore (`skillmix.selection.datastore`), the kernels (`skillmix.kernel.task_kernels`)
and the gradient skills graph (`skillmix.graph.gradient`) all go through these functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from skillmix.engine.encoding import IGNORE, EncodedSet, collate, label_logits, target_losses, target_means
from skillmix.engine.feature_transforms import Gradients
from skillmix.engine.lora_gradients import ParamSlice, PerExampleGradients, labelled_examples
from skillmix.engine.modeling import Runtime
from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)


# Parameter subsets


def untie_head(model: torch.nn.Module, subset: str) -> bool:
    """Give a tied LM head its own copy of the weight when `subset` separates head and embeddings.

    On a model whose output head shares its weight with the input embeddings (SmolLM2, GPT-2,
    the tiny models), `named_parameters()` lists the shared weight once, under the embedding's
    name, so `no_embeddings` would drop the head too and `no_head` would keep both uses. After
    untying, `no_embeddings` differentiates the head's use of the weight (the output side) and
    `no_head` the embedding lookup alone; the outputs do not change. `all` and other subsets keep
    the tie (a tied weight's gradient is the sum over both uses). Returns whether it untied.
    """
    if subset not in ("no_embeddings", "no_head"):
        return False
    getters = (getattr(model, "get_output_embeddings", None), getattr(model, "get_input_embeddings", None))
    if not all(getters):
        return False
    head, embeddings = (g() for g in getters)
    if head is None or embeddings is None or head.weight is not embeddings.weight:
        return False
    shared = embeddings.weight
    head.weight = torch.nn.Parameter(shared.detach().clone(), requires_grad=shared.requires_grad)
    if hasattr(model, "config"):
        model.config.tie_word_embeddings = False
    log.info("subset %s: the LM head tied to the input embeddings gets its own copy of the weight", subset)
    return True


def select_parameters(
    named: Mapping[str, torch.Tensor] | Sequence[tuple[str, torch.Tensor]], subset: str = "all"
) -> dict[str, torch.Tensor]:
    """The parameters a feature differentiates: `all`, `no_embeddings` (names without "embed"),
    `no_head` (without "head"), `bias` (names ending in "bias"), `lora` (names with "lora_"), or
    a comma-separated list of name substrings. Only parameters that require grad count."""
    items = list(named.items()) if isinstance(named, Mapping) else list(named)
    items = [(n, p) for n, p in items if p.requires_grad]
    rules: dict[str, Callable[[str], bool]] = {
        "all": lambda n: True,
        "no_embeddings": lambda n: "embed" not in n,
        "no_head": lambda n: "head" not in n,
        "bias": lambda n: n.endswith("bias"),
        "lora": lambda n: "lora_" in n,
    }
    if subset in rules:
        keep = rules[subset]
    else:
        parts = [s.strip() for s in subset.split(",") if s.strip()]
        if not parts:
            raise SkillmixInputError(f"parameter subset {subset!r} names nothing")

        def keep(n: str) -> bool:
            return any(s in n for s in parts)

    chosen = {n: p for n, p in items if keep(n)}
    if not chosen:
        raise SkillmixInputError(f"parameter subset {subset!r} selects no trainable parameter")
    return chosen


def param_slices(params: Mapping[str, torch.Tensor]) -> list[ParamSlice]:
    """The flat feature layout of `params` (in their order): name, shape, offset."""
    out, offset = [], 0
    for name, p in params.items():
        out.append(ParamSlice(name, tuple(p.shape), offset))
        offset += p.numel()
    return out


def uses_lora_engine(model: torch.nn.Module, subset: str) -> bool:
    """True when `subset` of `model` is exactly its trainable peft LoRA weights (the batched engine)."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    return subset in ("lora", "all") and bool(trainable) and all("lora_" in n for n in trainable)


# Gradient sources (units)


def _loss_gradient(
    model: torch.nn.Module,
    runtime: Runtime,
    pad_id: int,
    data: EncodedSet,
    idx: Sequence[int],
    params: Mapping[str, torch.Tensor],
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    what: str,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """(gradients w.r.t. `params`, loss) of `loss_of(logits, targets)` on examples `idx` of `data`,
    one padded batch (logits and targets at the label positions, as :func:`label_logits` gives them);
    a non-finite loss raises FloatingPointError naming `what`."""
    batch = collate([data.input_ids[i] for i in idx], [data.labels[i] for i in idx], pad_id)
    batch = {k: v.to(runtime.device) for k, v in batch.items()}
    with torch.enable_grad(), runtime.autocast():
        logits, targets = label_logits(model, batch)
    loss = loss_of(logits, targets)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss for {what}")
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True, materialize_grads=True)
    return grads, loss.detach()


def example_loss_gradients(
    model: torch.nn.Module,
    runtime: Runtime,
    pad_id: int,
    data: EncodedSet,
    rows: Sequence[int],
    subset: str = "lora",
    batch_size: int = 16,
) -> tuple[list[ParamSlice], Iterator[tuple[list[int], Gradients]]]:
    """Per-example gradients of each example's mean label-token loss: (layout, batches).

    Each batch is (positions in `rows`, gradients [B, *shape]); every example in `rows` must
    have label tokens. A peft model whose trainable weights are its LoRA adapters uses the
    batched LoRA engine (`skillmix.engine.lora_gradients`), grouping examples of similar length; any other
    subset takes one backward pass per example. The model is put in eval mode.
    """
    if batch_size < 1:
        raise SkillmixInputError(f"batch_size must be >= 1, got {batch_size}")
    rows = list(rows)
    if uses_lora_engine(model, subset):
        engine = PerExampleGradients(model, runtime, pad_id)

        def lora_batches() -> Iterator[tuple[list[int], Gradients]]:
            try:
                order = sorted(range(len(rows)), key=lambda j: len(data.input_ids[rows[j]]))
                for start in range(0, len(order), batch_size):
                    pos = order[start : start + batch_size]
                    idx = [rows[j] for j in pos]
                    yield (
                        pos,
                        engine(
                            [data.input_ids[i] for i in idx],
                            [data.labels[i] for i in idx],
                            [data.ids[i] for i in idx],
                        ),
                    )
            finally:
                engine.close()

        return engine.params, lora_batches()

    model.eval()
    params = select_parameters(model.named_parameters(), subset)
    layout = param_slices(params)

    def loop_batches() -> Iterator[tuple[list[int], Gradients]]:
        for j, i in enumerate(rows):
            grads, _ = _loss_gradient(
                model,
                runtime,
                pad_id,
                data,
                [i],
                params,
                lambda logits, targets: target_means(logits, targets)[0],
                f"example {data.ids[i]}",
            )
            yield [j], {name: g.detach()[None] for name, g in zip(params, grads, strict=True)}

    return layout, loop_batches()


def mean_loss_gradient(
    model: torch.nn.Module,
    runtime: Runtime,
    pad_id: int,
    data: EncodedSet,
    subset: str = "all",
    reduction: str = "tokens",
    limit: int | None = None,
    batch_size: int = 32,
) -> tuple[list[ParamSlice], Gradients, float]:
    """The gradient of one set's mean loss (e.g. a skill), as one row: (layout, [1, *shape], loss).

    `reduction` "tokens": the mean over all label tokens, as a training batch of these
    examples would take it; "examples": the mean of each example's mean token loss, as the
    evaluation reports it. The first `limit` labelled examples are used (all when None), in
    batches of `batch_size` whose gradients are summed exactly. Model in eval mode.
    """
    if reduction not in ("tokens", "examples"):
        raise SkillmixInputError(f"mean-loss reduction must be tokens or examples, got {reduction!r}")
    kept, _ = labelled_examples(data)
    kept = kept[:limit] if limit is not None else kept
    if not kept:
        raise SkillmixInputError(f"{data.skill}: no example with label tokens for the mean-loss gradient")
    model.eval()
    params = select_parameters(model.named_parameters(), subset)
    tokens = sum(sum(t != IGNORE for t in data.labels[i][1:]) for i in kept)
    total = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items()}

    def loss_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if reduction == "tokens":
            return target_losses(logits, targets)[0].sum() / tokens
        return target_means(logits, targets).sum() / len(kept)

    loss_sum = 0.0
    for start in range(0, len(kept), batch_size):
        idx = kept[start : start + batch_size]
        grads, part = _loss_gradient(
            model,
            runtime,
            pad_id,
            data,
            idx,
            params,
            loss_of,
            f"{data.skill}, the batch from example {start}",
        )
        for name, g in zip(params, grads, strict=True):
            total[name] += g.detach().to(torch.float64)
        loss_sum += float(part)
    return param_slices(params), {n: g[None] for n, g in total.items()}, loss_sum


def logit_gradients(
    model: torch.nn.Module,
    prompts: Sequence[list[int]],
    logits_of: Callable[[torch.nn.Module, list[int]], torch.Tensor],
    subset: str = "all",
) -> tuple[list[ParamSlice], Iterator[tuple[int, Gradients, torch.Tensor]]]:
    """Per-(example, logit) gradients of a model's C outputs on each prompt: (layout, items).

    Each item is (example index, gradients [C, *shape], the C logits (float64, CPU)). One
    forward pass per prompt (no padding) and one backward pass per output; a tied weight gets
    the sum of both uses' gradients (`no_embeddings` / `no_head` untie the head first, see
    :func:`untie_head`). The model is put in eval mode.
    """
    model.eval()
    untie_head(model, subset)
    params = select_parameters(model.named_parameters(), subset)
    plist = list(params.values())

    def items() -> Iterator[tuple[int, Gradients, torch.Tensor]]:
        for n, x in enumerate(prompts):
            f = logits_of(model, x)
            per_param: list[list[torch.Tensor]] = [[] for _ in plist]
            for c in range(f.shape[0]):
                grads = torch.autograd.grad(f[c], plist, retain_graph=c + 1 < f.shape[0], allow_unused=True)
                for out, g, p in zip(per_param, grads, plist, strict=True):
                    out.append(g.detach() if g is not None else torch.zeros_like(p))
            yield (
                n,
                {name: torch.stack(gs) for name, gs in zip(params, per_param, strict=True)},
                f.detach().double().cpu(),
            )

    return param_slices(params), items()
